"""Test mode on real runs: etl-sample draws zips reproducibly, and etl-enqueue --test runs a
sample into a separate table and compares it with a truth table."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import psycopg

from tests.support.cli import IDENTITY, enqueue, run_cli
from tests.support.data import make_raw_table, scalar
from tests.support.services import Stack, Worker


def sampled_zips(stack: Stack, table: str = "raw_companies_sample") -> list[str | None]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(f"SELECT DISTINCT zip_code FROM {table} ORDER BY 1").fetchall()  # noqa: S608
    return [r[0] for r in rows]


def test_sample_draws_the_same_zips_for_the_same_seed_with_all_their_rows(stack: Stack) -> None:
    make_raw_table(stack.database_url, zips=30, rows_per_zip=3)

    first = run_cli("etl-sample", "--zips", "5", "--seed", "11", env=stack.env, check=True)
    zips = sampled_zips(stack)
    again = run_cli("etl-sample", "--zips", "5", "--seed", "11", env=stack.env, check=True)
    same = sampled_zips(stack)
    run_cli("etl-sample", "--zips", "5", "--seed", "12", env=stack.env, check=True)
    other = sampled_zips(stack)

    assert len(zips) == 5 and zips == same and other != zips
    assert first.stdout == again.stdout
    assert first.stdout.startswith("sampled 5 of 32 zips of raw_companies (seed 11)")
    assert scalar(stack.database_url, "SELECT count(*) FROM raw_companies_sample") == 15
    # Every row of a sampled zip, exactly as in the raw table.
    assert (
        scalar(
            stack.database_url,
            "SELECT count(*) FROM (SELECT * FROM raw_companies WHERE zip_code IN "
            "(SELECT zip_code FROM raw_companies_sample) EXCEPT ALL "
            "SELECT * FROM raw_companies_sample) d",
        )
        == 0
    )


def test_sample_never_replaces_a_table_it_did_not_make(stack: Stack) -> None:
    make_raw_table(stack.database_url, zips=3)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE precious (id int)")

    result = run_cli("etl-sample", "--sample-table", "precious", env=stack.env)

    assert result.returncode == 1
    assert 'table "precious" exists and was not made by etl-sample' in result.stderr
    assert scalar(stack.database_url, "SELECT to_regclass('precious')::text") == "precious"


def test_test_mode_reports_a_match_and_then_each_difference_with_the_truth(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=8, rows_per_zip=4)
    with psycopg.connect(url, autocommit=True) as conn:
        # The source of truth: what the identity transform must produce, for every zip.
        conn.execute("CREATE TABLE truth AS SELECT * FROM raw_companies")
        conn.execute("ALTER TABLE truth ADD PRIMARY KEY (id)")
    run_cli("etl-sample", "--zips", "3", "--seed", "5", env=stack.env, check=True)
    start_worker(concurrency=2)
    test_run = ("--test", "--truth-table", "truth", "--transform", IDENTITY)

    match = enqueue(stack, *test_run, check=False)

    assert match.returncode == 0, match.stderr
    assert "MATCH    all 12 rows equal in every column" in match.stdout
    assert "on 3 zips, key id" in match.stdout
    assert scalar(url, "SELECT count(*) FROM clean_companies_test") == 12
    assert scalar(url, "SELECT to_regclass('clean_companies')") is None  # never the real one

    with psycopg.connect(url, autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM raw_companies_sample WHERE zip_code IS NOT NULL ORDER BY id"
            ).fetchall()
        ]
        changed, deleted = ids[0], ids[1]
        conn.execute("UPDATE truth SET employees = 424242 WHERE id = %s", (changed,))
        conn.execute("DELETE FROM truth WHERE id = %s", (deleted,))
        zip_code = conn.execute("SELECT zip_code FROM truth WHERE id = %s", (changed,)).fetchone()
        conn.execute(
            "INSERT INTO truth (id, zip_code, company_name) VALUES (9999, %s, 'Ghost Inc')",
            zip_code,
        )

    mismatch = enqueue(stack, *test_run, check=False)

    report = mismatch.stdout
    assert mismatch.returncode == 1
    assert "rows     truth 12  output 12" in report
    assert f"missing  1 row in the truth, not in the output: id 9999 (zip {zip_code[0]})" in report
    assert f"extra    1 row in the output, not in the truth: id {deleted} " in report
    assert "changed  1 row:" in report
    assert re.search(rf"\n  employees +1 row  id {changed}: truth '424242', output ", report)
    assert "DIFFERENT  3 differences between the output and truth" in report
    # The earlier test run's rows were replaced, not added to.
    assert scalar(url, "SELECT count(*) FROM clean_companies_test") == 12

    # --json: one document on stdout, the run's status with the comparison inside.
    as_json = enqueue(stack, *test_run, "--json", check=False)
    document = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and document["run_id"] in as_json.stderr
    assert document["complete"] and document["test"]["matches"] is False


def test_test_mode_without_a_truth_table_or_sample_is_refused_up_front(stack: Stack) -> None:
    make_raw_table(stack.database_url, zips=2)

    no_truth = enqueue(stack, "--test", check=False)
    no_sample = enqueue(stack, "--test", "--truth-table", "raw_companies", check=False)

    assert no_truth.returncode == 1
    assert "--test needs the table to compare with: --truth-table" in no_truth.stderr
    assert no_sample.returncode == 1
    assert 'sample table "raw_companies_sample" not found — make it with etl-sample' in (
        no_sample.stderr
    )
    assert scalar(stack.database_url, "SELECT to_regnamespace('etl')") is None
