"""Connection strings: every form a password can hide in is shown redacted, and a malformed
ETL_DATABASE_URL is refused in one line that never contains it."""

from __future__ import annotations

import re
import sys
import traceback

import pytest

from etl_worker.bench.runner import command_line
from etl_worker.config import Settings
from etl_worker.db import connect, conninfo, database_name, with_database
from etl_worker.errors import ConfigError
from etl_worker.urls import broker_name, check_broker_url, redact_url

SECRET = "hunter2"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # URLs of any scheme: the userinfo's password.
        ("postgresql://etl:hunter2@db:5432/etl", "postgresql://etl:***@db:5432/etl"),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:hunter2@cache:6380/2", "rediss://default:***@cache:6380/2"),
        ("amqp://guest:hunter2@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
        ("postgresql://etl:hun@ter2@db/etl", "postgresql://etl:***@db/etl"),
        ("postgresql://etl:hunter2@[::1]:5432/etl", "postgresql://etl:***@[::1]:5432/etl"),
        ("postgresql://etl:hunter2@a:1,b:2/etl", "postgresql://etl:***@a:1,b:2/etl"),
        # An unencoded '/', '?' or '#' in the password: only the host is sure.
        ("postgresql://etl:hun/ter2@db:5432/etl", "postgresql://***@db:5432"),
        ("postgresql://etl:hun?ter2@db/etl", "postgresql://***@db"),
        ("postgresql://etl:hun#ter2@db/etl", "postgresql://***@db"),
        # Secrets in the query, however the parameter is spelled.
        (
            "postgresql://etl@db/etl?password=hunter2&sslmode=require",
            "postgresql://etl@db/etl?password=***&sslmode=require",
        ),
        ("postgresql://db/etl?sslpassword=hunter2#x", "postgresql://db/etl?sslpassword=***#x"),
        ("postgresql://db/etl?pass%77ord=hunter2", "postgresql://db/etl?pass%77ord=***"),
        ("https://h/x?access_key=hunter2&secret=hunter2", "https://h/x?access_key=***&secret=***"),
        ("redis://h:6379/0?passwd=hunter2", "redis://h:6379/0?passwd=***"),
        (
            "sentinel://:hunter2@s1:26379;sentinel://:hunter2@s2:26379",
            "sentinel://:***@s1:26379;sentinel://:***@s2:26379",
        ),
        # libpq key=value strings, quoted values too.
        ("host=db password=hunter2 user=etl", "host=db password=*** user=etl"),
        ("host=db password='a b hunter2' user=etl", "host=db password=*** user=etl"),
        (r"password = 'it\'s hunter2' dbname=etl", "password = *** dbname=etl"),
        ("sslpassword=hunter2 host=db", "sslpassword=*** host=db"),
        ("host=db password='hunter2 never closed", "host=db password=***"),
        ("host= password=hunter2", "host= password=***"),
        # What does not parse: every user:secret@ it sees.
        ("postgresql//etl:hunter2@db/etl", "postgresql//etl:***@db/etl"),
        ("postgresql:/etl:hunter2@db/etl", "postgresql:***@db/etl"),
        ("etl:hunter2@db", "etl:***@db"),
        (
            'missing "=" after "postgresql//etl:hunter2@db/etl" in connection info string',
            'missing "=" after "postgresql//etl:***@db/etl" in connection info string',
        ),
    ],
)
def test_every_form_of_password_is_redacted(text: str, shown: str) -> None:
    assert redact_url(text) == shown
    assert SECRET not in redact_url(text)


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://postgres@127.0.0.1:5432/etl",
        "postgresql:///etl?host=/run/postgresql",
        "postgresql://%2Frun%2Fpostgresql/etl",
        "redis://127.0.0.1:6379/0",
        "host=/run/postgresql dbname=etl user=etl",
        'connection to server at "127.0.0.1", port 9 failed: Connection refused',
    ],
)
def test_what_holds_no_secret_is_shown_as_it_is(text: str) -> None:
    assert redact_url(text) == text


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql//etl:hunter2@db/etl", "lacks '://' after its scheme"),
        ("postgresql:/etl:hunter2@db/etl", "lacks '://' after its scheme"),
        ("http://etl:hunter2@db/etl", "is not a Postgres URL (http://)"),
        ("redis://:hunter2@db:6379/0", "is not a Postgres URL (redis://)"),
        ("postgresql://etl:hunter2/etl", "has a port that is not a number"),
        ("postgresql://etl:hun/ter2@db/etl", "has a raw '@', '/', '?' or '#' in its password"),
        ("postgresql://etl:1234/hunter2@db/etl", "has a raw '@', '/', '?' or '#' in its password"),
        ("postgresql://etl:hun@ter2@db/etl", "has a raw '@', '/', '?' or '#' in its password"),
        ("host=db password=hunter2 x", "is neither a Postgres URL nor key=value pairs"),
        ("host=db passwd=hunter2", "(libpq knows no parameter passwd)"),
        ("host=db password='hunter2", "is neither a Postgres URL nor key=value pairs"),
        # libpq's own message would quote it: missing "=" after "hunter2".
        ("host=db user=etl hunter2", "is neither a Postgres URL nor key=value pairs"),
    ],
)
def test_a_malformed_database_url_is_refused_without_its_password(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.load(environ={"ETL_DATABASE_URL": url})

    message = str(refused.value)
    assert message.startswith("ETL_DATABASE_URL ") and why in message, message
    # Not in the message, nor anywhere in the traceback a worker would print.
    assert SECRET not in "".join(traceback.format_exception(refused.value))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://etl:hunter2@db:5432/etl",
        "postgres://etl@db/etl",
        "postgresql:///etl?host=/run/postgresql",
        "postgresql://%2Frun%2Fpostgresql/etl",
        "postgresql://etl@[::1]:5432/etl",
        "postgresql://etl@[fe80::1%25eth0]/etl",
        "postgresql://etl@a:5432,b:5433/etl?target_session_attrs=read-write",
        "postgresql://etl:hun%2Fter2@db/etl",
        "postgresql://etl:hun?ter2@db/etl",  # libpq reads the userinfo up to the '@'
        "postgresql://db/etl?user=etl@corp",
        "postgresql://db:5432?host=/run/postgresql&user=etl@corp",
        "host=db port=5432 dbname=etl user=etl password='a b'",
        "host=/run/postgresql dbname=etl",
    ],
)
def test_every_form_libpq_accepts_is_accepted(url: str) -> None:
    assert Settings.load(environ={"ETL_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis://:hun/ter2@cache:6379/0", "has a raw '@', '/', '?' or '#' in its password"),
        ("redis://:hun@ter2@cache:6379/0", "has a raw '@', '/', '?' or '#' in its password"),
        ("redis://:hunter2/0", "has a port that is not a number"),
        ("redis://:hun?ter2@cache:6379/0", "has a raw '@', '/', '?' or '#' in its password"),
    ],
)
def test_a_broker_url_whose_password_would_spill_is_refused(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(why)) as refused:
        Settings.load(environ={"ETL_BROKER_URL": url})
    assert str(refused.value).startswith("ETL_BROKER_URL ")
    assert SECRET not in "".join(traceback.format_exception(refused.value))


def test_broker_url_lists_are_checked_one_by_one() -> None:
    urls = "sentinel://:pw@s1:26379;sentinel://:pw@s2:26379"
    assert Settings.load(environ={"ETL_BROKER_URL": urls}).broker_url == urls


def test_the_database_url_from_a_file_is_checked_too(tmp_path: pytest.TempPathFactory) -> None:
    secret = tmp_path / "url"  # type: ignore[operator]
    secret.write_text("postgresql//etl:hunter2@db/etl\n")
    with pytest.raises(ConfigError, match="lacks '://'") as refused:
        Settings.load(environ={"ETL_DATABASE_URL_FILE": str(secret)})
    assert SECRET not in str(refused.value)


def test_settings_never_show_the_urls_in_their_repr() -> None:
    settings = Settings.load(
        environ={
            "ETL_DATABASE_URL": "postgresql://etl:hunter2@db/etl",
            "ETL_BROKER_URL": "redis://:hunter2@cache:6379/0",
        }
    )
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(
    "url",
    ["postgresql://etl@db:5432/etl", "host=db port=5432 dbname=etl user=etl"],
)
def test_the_database_name_is_read_and_replaced_in_either_form(url: str) -> None:
    assert database_name(url) == "etl"
    assert database_name(with_database(url, "other db")) == "other db"
    assert with_database(url, "x").startswith("postgresql://") == url.startswith("postgresql")


def test_every_connection_fixes_the_settings_a_value_s_text_depends_on() -> None:
    text = conninfo("postgresql://db/etl?options=-c%20work_mem%3D64MB", 6)
    # The URL's own options stay; ours come after them, so ours win.
    assert "options='-c work_mem=64MB -c DateStyle=ISO,MDY -c TimeZone=UTC" in text
    assert "IntervalStyle=postgres -c extra_float_digits=3'" in text


def test_the_benchmark_report_shows_its_command_line_without_passwords(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ["etl-bench", "--database-url", "postgresql://etl:hunter2@db/etl", "--rows", "10"]
    monkeypatch.setattr(sys, "argv", argv)
    assert command_line() == "etl-bench --database-url 'postgresql://etl:***@db/etl' --rows 10"


def test_a_connection_string_that_bypassed_settings_is_refused_the_same_way() -> None:
    with pytest.raises(ConfigError, match="is neither a Postgres URL") as refused:
        connect(f"host=db user=etl {SECRET}")
    assert SECRET not in "".join(traceback.format_exception(refused.value))


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://:pw@127.0.0.1:6379",
        "rediss://host:6380/15?ssl_cert_reqs=required",
        "redis+socket:///run/redis.sock",
        "sentinel://:pw@s1:26379;sentinel://:pw@s2:26379",
        "amqp://guest:guest@127.0.0.1:5672//",
        "pyamqp://guest@host/vhost",
    ],
)
def test_broker_urls_kombu_can_use_are_accepted(url: str) -> None:
    check_broker_url(url, "ETL_BROKER_URL")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://127.0.0.1:6379/notadb", "names Redis database 'notadb'"),
        ("http://127.0.0.1:6379/0", "is not a broker URL (http://)"),
        ("127.0.0.1:6379", "is not a broker URL (no scheme)"),
        ("redis://h:6379/0;http://h", "is not a broker URL (http://)"),
    ],
)
def test_broker_urls_kombu_would_choke_on_are_one_line(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        check_broker_url(url, "ETL_BROKER_URL")


def test_messages_name_the_broker_a_url_reaches() -> None:
    assert broker_name("redis://h:6379/0") == "Redis"
    assert broker_name("amqp://guest@h//") == "RabbitMQ"
    assert broker_name("weird") == "the broker"
