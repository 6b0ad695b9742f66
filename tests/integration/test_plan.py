"""etl-plan on a real table: sizes as Postgres counts them, the largest partitions measured
through the pipeline's steps, a sizing, the index check — and nothing written."""

from __future__ import annotations

import json

import psycopg

from etl_worker.db import TableName, has_index_on
from etl_worker.devtools.seed import seed_raw_table
from tests.support.cli import run_cli
from tests.support.data import scalar


def plan(url: str, *args: str) -> dict:  # type: ignore[type-arg]
    env = {"ETL_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    out = run_cli("etl-plan", "--json", *args, env=env, check=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def test_plan_measures_sizes_and_the_largest_partitions_and_writes_nothing(
    fresh_database: str,
) -> None:
    url = fresh_database
    seed_raw_table(url, rows=3000, zips=40, seed=7)
    counts = "SELECT count(*) AS n FROM raw_companies GROUP BY zip_code"

    report = plan(url, "--memory", "4GiB", "--cpus", "2", "--hours", "1", "--samples", "2")

    sizes = report["sizes"]
    assert sizes["total_rows"] == 3000
    assert sizes["partitions"] == scalar(url, f"SELECT count(*) FROM ({counts}) c")  # noqa: S608
    assert sizes["largest"][0][1] == scalar(url, f"SELECT max(n) FROM ({counts}) c")  # noqa: S608
    assert sizes["largest"][0][1] >= sizes["p99"] >= sizes["p50"] >= 1
    kinds = [s["kind"] for s in report["samples"]]
    assert kinds == ["largest", "largest", "median"]
    for sample in report["samples"]:
        assert sample["error"] is None
        assert 0 < sample["downcast_bytes"] == sample["frame_bytes"]  # not downcast
        assert sample["peak_rss_bytes"] > sample["frame_bytes"]
    sizing = report["sizing"]
    assert 1 <= sizing["concurrency"] <= 2
    assert sizing["machines"] >= 1 and sizing["rows_per_second"] > 0
    assert report["indexed"] is True and report["warnings"] == []
    # Measured, not written: no audit schema, no target table, no scratch table left.
    assert scalar(url, "SELECT to_regnamespace('etl')") is None
    assert scalar(url, "SELECT to_regclass('clean_companies')") is None
    assert scalar(url, "SELECT count(*) FROM pg_class WHERE relname = 'etl_plan_scratch'") == 0


def test_plan_warns_about_a_missing_index_and_create_index_builds_it(
    fresh_database: str,
) -> None:
    url = fresh_database
    seed_raw_table(url, rows=200, zips=5)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP INDEX raw_companies_zip_code_idx")

    warned = plan(url)
    indexed = plan(url, "--create-index")

    assert warned["indexed"] is False
    assert any("has no index on zip_code" in w for w in warned["warnings"])
    assert indexed["index_created"] is True and indexed["indexed"] is True
    assert indexed["warnings"] == []
    with psycopg.connect(url, autocommit=True) as conn:
        assert has_index_on(conn, TableName("raw_companies"), "zip_code")


def test_plan_of_an_unknown_table_is_one_clear_line(fresh_database: str) -> None:
    env = {"ETL_DATABASE_URL": fresh_database, "PATH": "/usr/bin:/bin"}

    result = run_cli("etl-plan", "--raw-table", "nope", env=env)

    assert result.returncode == 1
    assert result.stderr.startswith('error: table "nope" not found')
    assert "Traceback" not in result.stderr
