"""No console script prints a password: given database and broker URLs whose password is
`hunter2` and that nothing answers at, or a database URL in any form a password hides in
(key=value strings, quoted values, `?password=`, malformed URLs), every command says what is
wrong in one line, and the password is nowhere in what it prints."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from etl_worker.devtools.embedded import free_port
from tests.support.cli import run_cli
from tests.support.services import celery_command

SECRET = "hunter2"


def unreachable_env(**urls: str) -> dict[str, str]:
    """This environment without ETL_* settings, plus database and broker URLs carrying the
    password on a port nothing listens on (or the `urls` given)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    env["ETL_DATABASE_URL"] = f"postgresql://etl:{SECRET}@127.0.0.1:{port}/etl"
    env["ETL_BROKER_URL"] = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    env.update(urls)
    return env


COMMANDS = [
    ("etl-seed", "--rows", "10"),
    ("etl-enqueue", "--all-zips"),
    ("etl-status",),
    ("etl-report",),
    ("etl-sample",),
    ("etl-plan",),
    ("etl-metrics",),
    ("etl-bench", "--shared-postgres", "--rows", "10", "--zips", "2"),
    ("etl-sweep",),
    ("etl-migrate",),
]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_no_console_script_prints_the_password_of_a_url_it_cannot_connect_to(
    command: tuple[str, ...],
) -> None:
    result = run_cli(*command, env=unreachable_env(), timeout=120)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert SECRET not in output
    assert "***@127.0.0.1" in output  # it says where it tried, redacted
    assert "Traceback" not in output
    assert result.stderr.splitlines()[-1].startswith("error: ")  # etl-bench talks first


def test_the_demo_falls_back_without_printing_the_passwords(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    result = run_cli(
        "etl-demo",
        *("--rows", "20", "--zips", "2", "--processes", "1", "--state-dir", str(state)),
        env=unreachable_env(),
        timeout=240,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "no Postgres answered at postgresql://etl:***@127.0.0.1" in output
    assert "no Redis answered at redis://:***@127.0.0.1" in output
    assert SECRET not in output
    assert SECRET not in (state / "worker.log").read_text(errors="replace")


PORT = free_port()
DATABASE_URLS = {
    "key=value": f"host=127.0.0.1 port={PORT} user=etl password={SECRET} dbname=etl",
    "quoted": f"host=127.0.0.1 port={PORT} password='{SECRET} and more' dbname=etl",
    "query": f"postgresql://etl@127.0.0.1:{PORT}/etl?password={SECRET}&sslmode=disable",
    "no-scheme-slashes": f"postgresql//etl:{SECRET}@127.0.0.1:{PORT}/etl",
    "raw-slash": f"postgresql://etl:hun/ter2@127.0.0.1:{PORT}/etl",
    "raw-at": f"postgresql://etl:hun@ter2@127.0.0.1:{PORT}/etl",
    "unknown-key": f"host=127.0.0.1 passwd={SECRET}",
}


@pytest.mark.parametrize("url", DATABASE_URLS.values(), ids=DATABASE_URLS.keys())
def test_every_form_of_database_url_is_shown_without_its_password(url: str) -> None:
    by_env = run_cli("etl-enqueue", "--all-zips", env=unreachable_env(ETL_DATABASE_URL=url))
    by_flag = run_cli("etl-status", "--database-url", url, env=unreachable_env())

    for result in (by_env, by_flag):
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert SECRET not in output and "hun/ter2" not in output and "ter2@" not in output
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, output


def test_a_worker_given_a_malformed_database_url_does_not_print_its_password() -> None:
    """Celery reports an app it cannot load with a traceback of its own: the traceback holds
    the one-line reason, without the password."""
    env = unreachable_env(ETL_DATABASE_URL=DATABASE_URLS["no-scheme-slashes"])
    result = subprocess.run(
        [*celery_command("worker"), "-c", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ETL_DATABASE_URL (postgresql//etl:***@127.0.0.1" in output
    assert "lacks '://' after its scheme" in output
    assert SECRET not in output
