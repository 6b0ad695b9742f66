"""Data contracts (issue 15 §2) with real workers: a partition's output is checked before
it is written; one that breaks the contract is refused (the target keeps its rows) with the
failed checks in the audit, or its offending rows go to a quarantine table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tests.support.cli import IDENTITY, enqueue, run_cli, run_json
from tests.support.data import make_raw_table, scalar, table_difference
from tests.support.services import Stack, Worker

PASSING = "tests.support.contracts:ANY_COMPANY"
SMALL = "tests.support.contracts:SmallCompanies"
CHECK = "employees: less_than_or_equal_to(30)"
#: make_raw_table(zips=4, rows_per_zip=5): rows 1-10 (zips 00000, 00001) pass SMALL; in the
#: others, rows over 10 with employees (every fourth row has none) break it.
PASSING_ZIPS = {"00000", "00001"}
BREAKING = "SELECT count(*) FROM raw_companies WHERE employees > 30"


def audit(stack: Stack, run_id: str) -> dict[str | None, dict[str, Any]]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT part_key, state::text, attempts, retries, error, contract_failures, "
            "rows_written, rows_quarantined FROM etl.partitions WHERE run_id = %s",
            (run_id,),
        ).fetchall()
    names = ["state", "attempts", "retries", "error", "failures", "written", "quarantined"]
    return {r[0]: dict(zip(names, r[1:], strict=True)) for r in rows}


def test_a_passing_contract_writes_every_partition(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    make_raw_table(stack.database_url, zips=4, rows_per_zip=5)
    start_worker(concurrency=1)

    result = enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY, "--contract", PASSING)

    run_id = result.stdout.splitlines()[0]
    rows = audit(stack, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    assert all(r["failures"] is None for r in rows.values())
    assert table_difference(stack.database_url, "raw_companies", "clean_companies") == (0, 0)


def test_a_breaking_partition_is_not_written_and_fails_once_with_its_checks(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=4, rows_per_zip=5)
    start_worker(concurrency=1)
    enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY)  # the target as it was
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE raw_companies SET notes = 'new'")

    result = enqueue(
        stack, "--all-zips", "--wait", "--transform", IDENTITY, "--contract", SMALL, check=False
    )

    assert result.returncode == 1
    run_id = result.stdout.splitlines()[0]
    rows = audit(stack, run_id)
    failed = {k for k, r in rows.items() if r["state"] == "failed"}
    assert failed == set(rows) - PASSING_ZIPS
    for key in failed:
        r = rows[key]
        assert (r["attempts"], r["retries"]) == (1, 0)  # permanent: never retried
        assert "breaks contract" in r["error"] and CHECK in r["error"]
        (check,) = r["failures"]["checks"]
        assert check["check"] == CHECK
        bad = scalar(url, BREAKING + " AND zip_code IS NOT DISTINCT FROM %s", (key,))
        assert check["failures"] == bad == r["failures"]["rows_failed"]
        assert 0 < len(check["rows"]) <= 5 and all(row["employees"] > 30 for row in check["rows"])
    # The refused partitions kept their old rows; the others were rewritten.
    new = "SELECT count(*) FROM clean_companies WHERE notes = 'new'"
    assert scalar(url, new) == 10
    assert scalar(url, "SELECT count(*) FROM clean_companies") == 30
    status = run_json(stack, run_id)
    grouped = status["contract_failures"][CHECK]
    assert grouped["failed"] == len(failed) and grouped["failures"] == scalar(url, BREAKING)
    text = run_cli("etl-status", run_id, env=stack.env).stdout
    assert f"[{scalar(url, BREAKING)} values] {CHECK}" in text
    html = tmp_path / "report.html"
    run_cli("etl-report", run_id, "--html", str(html), env=stack.env, check=True)
    assert "Contract failures by check (1)" in html.read_text() and CHECK in html.read_text()


def test_quarantine_writes_offending_rows_apart_and_the_rest_to_the_target(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=4, rows_per_zip=5)
    start_worker(concurrency=1)
    args = ("--all-zips", "--wait", "--transform", IDENTITY, "--contract", SMALL)

    first = enqueue(stack, *args, "--quarantine", "bad_companies")
    enqueue(stack, *args, "--quarantine", "bad_companies")  # a rerun replaces, never adds

    rows = audit(stack, first.stdout.splitlines()[0])
    assert {r["state"] for r in rows.values()} == {"finished"}
    bad = scalar(url, BREAKING)
    assert sum(r["quarantined"] or 0 for r in rows.values()) == bad
    assert scalar(url, "SELECT count(*) FROM bad_companies") == bad
    assert scalar(url, "SELECT count(*) FROM bad_companies WHERE employees <= 30") == 0
    assert scalar(url, "SELECT min(failed_checks) = max(failed_checks) FROM bad_companies")
    assert scalar(url, "SELECT min(failed_checks) FROM bad_companies") == CHECK
    assert scalar(url, "SELECT count(*) FROM clean_companies WHERE employees > 30") == 0
    assert scalar(url, "SELECT count(*) FROM clean_companies") == 30 - bad
    # Target and quarantine together hold the raw table, each row once.
    with psycopg.connect(url, autocommit=True) as conn:
        columns = sql.SQL(", ").join(
            sql.Identifier(c)
            for (c,) in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'clean_companies' ORDER BY ordinal_position"
            )
        )
        union = "CREATE TABLE together AS SELECT * FROM clean_companies UNION ALL SELECT {} FROM {}"
        conn.execute(sql.SQL(union).format(columns, sql.Identifier("bad_companies")))
    assert table_difference(url, "raw_companies", "together") == (0, 0)
