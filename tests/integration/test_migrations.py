"""The audit schema upgrades in place: numbered migrations from any schema an earlier
version shipped, and workers that refuse to work against a version their code does not
know."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from etl_worker import migrations
from tests.support.cli import IDENTITY, enqueue, run_cli
from tests.support.data import make_raw_table, scalar, table_difference
from tests.support.services import Stack, Worker, wait_until

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def create_schema_as_shipped(url: str, commit: str) -> None:
    """The audit schema exactly as `schema.sql` of an earlier commit created it (before
    migrations were numbered), with one finished run in it."""
    text = (FIXTURES / f"audit_schema_{commit}.sql").read_text()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL(text).format(schema=sql.Identifier("etl")))  # type: ignore[arg-type]
        conn.execute(
            "INSERT INTO etl.runs (run_id, raw_table, target_table, partition_column, transform)"
            " VALUES ('old-run', 'raw_companies', 'clean_companies', 'zip_code', 'm:f')"
        )
        conn.execute(
            "INSERT INTO etl.partitions (run_id, part_key, state)"
            " VALUES ('old-run', '1', 'finished')"
        )


def columns(url: str, table: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'etl' AND table_name = %s",
            (table,),
        ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize("commit", ["8d620b3", "abc172e"])
def test_an_audit_schema_an_earlier_version_made_is_upgraded_and_a_run_works_on_it(
    stack: Stack, start_worker: Callable[..., Worker], commit: str
) -> None:
    url = stack.database_url
    create_schema_as_shipped(url, commit)
    with psycopg.connect(url) as conn:
        assert migrations.current_version(conn, "etl") == 0

    migrated = run_cli("etl-migrate", env=stack.env, check=True)

    assert f"version 0 -> {migrations.code_version()}" in migrated.stdout
    assert {"requeues", "requeue_reason"} <= columns(url, "partitions")
    # The old run and its audit row survive the upgrade.
    assert scalar(url, "SELECT state::text FROM etl.partitions WHERE run_id = 'old-run'") == (
        "finished"
    )
    again = run_cli("etl-migrate", env=stack.env, check=True)
    assert "nothing to apply" in again.stdout

    make_raw_table(url, zips=4, rows_per_zip=5)
    start_worker(concurrency=1)
    enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY)
    assert table_difference(url, "raw_companies", "clean_companies") == (0, 0)


def test_enqueue_migrates_an_old_schema_before_it_writes(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    create_schema_as_shipped(url, "8d620b3")
    make_raw_table(url, zips=2, rows_per_zip=3)
    start_worker(concurrency=1)

    enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY)

    with psycopg.connect(url) as conn:
        assert migrations.current_version(conn, "etl") == migrations.code_version()
    assert table_difference(url, "raw_companies", "clean_companies") == (0, 0)


def test_migrate_check_says_what_is_pending_and_exits_1(stack: Stack) -> None:
    create_schema_as_shipped(stack.database_url, "abc172e")

    pending = run_cli("etl-migrate", "--check", env=stack.env)

    assert pending.returncode == 1
    assert "pending" in pending.stdout and "etl-migrate" in pending.stdout
    run_cli("etl-migrate", env=stack.env, check=True)
    assert run_cli("etl-migrate", "--check", env=stack.env).returncode == 0


def test_a_worker_whose_code_expects_another_schema_version_claims_nothing(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    """A newer schema than the worker's code (someone migrated ahead of the fleet): the
    worker says so and claims nothing; once the schema matches again, the run goes on."""
    url = stack.database_url
    make_raw_table(url, zips=2, rows_per_zip=3)
    run_cli("etl-migrate", env=stack.env, check=True)
    newer = migrations.code_version() + 1
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO etl.schema_version (version, name) VALUES (%s, 'from_the_future')",
            (newer,),
        )
    # The producer refuses a newer schema too, before it writes anything.
    refused = enqueue(stack, "--all-zips", "--transform", IDENTITY, check=False)
    assert refused.returncode == 1
    assert f"version {newer}, newer than this" in refused.stderr
    assert scalar(url, "SELECT count(*) FROM etl.runs") == 0

    # Enqueue at the right version, then move the schema ahead under the workers.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM etl.schema_version WHERE version = %s", (newer,))
    run_id = enqueue(stack, "--all-zips", "--transform", IDENTITY).stdout.splitlines()[0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO etl.schema_version (version, name) VALUES (%s, 'from_the_future')",
            (newer,),
        )
    worker = start_worker(concurrency=1, ETL_RETRY_BACKOFF_BASE="0.2", ETL_RETRY_BACKOFF_MAX="1")

    wait_until(
        lambda: f"version {newer}, newer than this worker" in worker.log(),
        timeout=60,
        what="the worker's version error in its log",
    )
    assert scalar(url, "SELECT sum(attempts) FROM etl.partitions WHERE run_id = %s", (run_id,)) == 0
    assert scalar(url, "SELECT count(*) FROM clean_companies") == 0

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM etl.schema_version WHERE version = %s", (newer,))
    wait_until(
        lambda: scalar(
            url,
            "SELECT count(*) = 0 FROM etl.partitions WHERE run_id = %s AND state <> 'finished'",
            (run_id,),
        ),
        timeout=60,
        what="the run to finish once the schema matches",
    )
    assert table_difference(url, "raw_companies", "clean_companies") == (0, 0)
