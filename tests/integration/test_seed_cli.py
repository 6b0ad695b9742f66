"""The installed `etl-seed` command, run as a user would: a subprocess."""

from __future__ import annotations

import os
import re
import subprocess

from etl_worker.db import connect
from tests.support.cli import run_cli

SUMMARY = re.compile(
    r"seeded (?P<table>\S+): (?P<rows>[\d,]+) rows, (?P<zips>[\d,]+) zips, "
    r"[\d,.]+ MB in [\d.]+ s \([\d,]+ rows/s\)"
)


def run_seed(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # Only the variables a test sets: an ETL_* from the developer's shell must not leak in.
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ETL_")}
    return run_cli("etl-seed", *args, env=clean | env, timeout=120)


def count_rows(url: str, table: str) -> int:
    with connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    return int(row[0]) if row else -1


def test_seed_prints_one_summary_line_and_exits_0(fresh_database: str) -> None:
    result = run_seed("--rows", "3000", "--zips", "30", "--database-url", fresh_database)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    summary = SUMMARY.fullmatch(lines[0])
    assert summary is not None, lines[0]
    assert summary.group("table", "rows", "zips") == ("raw_companies", "3,000", "30")
    assert count_rows(fresh_database, "raw_companies") == 3_000


def test_seed_takes_database_and_table_from_the_environment(fresh_database: str) -> None:
    result = run_seed(
        "--rows", "20", "--zips", "4", ETL_DATABASE_URL=fresh_database, ETL_RAW_TABLE="companies"
    )

    assert result.returncode == 0, result.stderr
    assert count_rows(fresh_database, "companies") == 20


def test_seed_table_option_overrides_the_environment(fresh_database: str) -> None:
    result = run_seed(
        "--rows", "20", "--zips", "4", "--table", "mine", ETL_DATABASE_URL=fresh_database,
        ETL_RAW_TABLE="companies",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert count_rows(fresh_database, "mine") == 20


def test_unreachable_database_is_one_line_error_and_nonzero_exit() -> None:
    result = run_seed("--rows", "10", "--database-url", "postgresql://postgres@127.0.0.1:1/etl")

    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.startswith("error: cannot connect to Postgres at postgresql://")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
