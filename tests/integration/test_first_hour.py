"""Issue 12, the first hour: the mistakes a new user makes, each answered by the installed
commands (subprocesses, real Postgres and Redis) in one line with a non-zero exit, and
nothing a command must never destroy destroyed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.support.cli import IDENTITY, enqueue, run_cli
from tests.support.data import make_raw_table
from tests.support.services import Stack


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed on stderr (asserts it is one)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_seed_refuses_a_table_it_did_not_create_unless_replace(stack: Stack) -> None:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE my_real (id int, name text)")
        conn.execute("INSERT INTO my_real VALUES (1, 'keep me')")

    refused = run_cli("etl-seed", "--rows", "10", "--table", "my_real", env=stack.env)

    assert refused.returncode == 1
    line = error_line(refused)
    assert 'table "my_real"' in line and "not made by etl-seed" in line and "--replace" in line
    with psycopg.connect(stack.database_url) as conn:
        assert conn.execute("SELECT name FROM my_real").fetchall() == [("keep me",)]

    # Its own table it seeds again and again; --replace takes the user's table.
    run_cli("etl-seed", "--rows", "10", "--table", "seeded", env=stack.env, check=True)
    run_cli("etl-seed", "--rows", "20", "--table", "seeded", env=stack.env, check=True)
    run_cli(
        "etl-seed", "--rows", "10", "--table", "my_real", "--replace", env=stack.env, check=True
    )
    with psycopg.connect(stack.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM my_real").fetchone() == (10,)


def test_enqueue_warns_per_chosen_zip_with_no_raw_rows(stack: Stack) -> None:
    make_raw_table(stack.database_url, zips=3, rows_per_zip=2)

    result = enqueue(stack, "--zips", "00001,99998,99999", "--transform", IDENTITY)

    warnings = [line for line in result.stderr.splitlines() if "has no rows" in line]
    assert len(warnings) == 2, result.stderr
    assert "zip 99998 has no rows" in warnings[0] and "zip 99999 has no rows" in warnings[1]
    assert "will delete the rows of zip 99998" in warnings[0]
    # Before the run is on its way: ahead of the "enqueued" line.
    lines = result.stderr.splitlines()
    enqueued = next(i for i, line in enumerate(lines) if line.startswith("enqueued"))
    assert all(lines.index(w) < enqueued for w in warnings)


def test_missing_index_hint_quotes_the_identifiers(stack: Stack) -> None:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute('CREATE TABLE "Raw Co" (id bigint PRIMARY KEY, "Zip Code" text)')
        conn.execute("""INSERT INTO "Raw Co" VALUES (1, '1')""")

    result = enqueue(
        stack, "--all-zips", "--raw-table", "Raw Co", "--partition-column", "Zip Code",
        "--target-table", "out", "--transform", IDENTITY,
    )  # fmt: skip

    assert 'CREATE INDEX CONCURRENTLY ON "Raw Co" ("Zip Code")' in result.stderr


def test_a_transform_returning_none_is_one_line_before_anything_is_sent(stack: Stack) -> None:
    make_raw_table(stack.database_url, zips=2, rows_per_zip=2)

    result = enqueue(
        stack, "--all-zips", "--transform", "tests.support.transforms:forget_to_return",
        check=False,
    )  # fmt: skip

    assert result.returncode == 1
    line = error_line(result)
    assert "returned NoneType, not a DataFrame" in line and "return df" in line
    assert stack.queued() == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/notadb", "names Redis database 'notadb'"),
        ("http://127.0.0.1:6379/0", "is not a broker URL (http://)"),
        ("127.0.0.1:6379", "is not a broker URL (no scheme)"),
    ],
)
def test_a_malformed_broker_url_is_one_line(stack: Stack, url: str, expected: str) -> None:
    env = stack.env | {"ETL_BROKER_URL": url}
    for args in (["etl-metrics"], ["etl-sweep"], ["etl-enqueue", "--all-zips"]):
        result = run_cli(*args, env=env)
        assert result.returncode == 1, (args, result.stderr)
        line = error_line(result)
        assert line.startswith("error: ETL_BROKER_URL") and expected in line, line


def test_an_amqp_broker_that_does_not_answer_is_not_blamed_on_redis(stack: Stack) -> None:
    make_raw_table(stack.database_url, zips=2, rows_per_zip=2)
    env = stack.env | {"ETL_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"}

    for result in (
        run_cli("etl-metrics", env=env),
        run_cli("etl-enqueue", "--all-zips", "--transform", IDENTITY, env=env),
    ):
        assert result.returncode == 1
        line = error_line(result)
        assert "Redis" not in line and "RabbitMQ" in line, line


def test_the_demo_reseeds_its_own_table_and_leaves_a_users_alone(
    stack: Stack, tmp_path: Path
) -> None:
    demo = ["etl-demo", "--rows", "600", "--zips", "6", "--state-dir", str(tmp_path)]
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE mine (id int)")
        conn.execute("INSERT INTO mine VALUES (1)")

    refused = run_cli(*demo, env=stack.env | {"ETL_RAW_TABLE": "mine"}, timeout=300)

    assert refused.returncode == 1
    assert 'table "mine"' in refused.stderr and "not made by etl-seed" in refused.stderr
    with psycopg.connect(stack.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM mine").fetchone() == (1,)
    # A raw table an earlier seed (or demo) made is seeded again: ./dev demo runs twice.
    run_cli("etl-seed", "--rows", "10", env=stack.env, check=True)
    run_cli(*demo, env=stack.env, timeout=300, check=True)
