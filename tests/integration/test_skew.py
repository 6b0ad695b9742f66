"""Skew and the partition index: big partitions split into sub-tasks, --create-index."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import psycopg

from etl_worker.db import Column, TableName, connect, has_index_on
from etl_worker.splits import rows_per_partition, split_ranges
from tests.integration.test_run import IDENTITY, enqueue
from tests.support.data import make_raw_table, scalar, table_difference
from tests.support.services import Stack, Worker

BIG_ZIP = "00001"


def make_skewed_table(url: str) -> int:
    """The awkward raw table, plus a copy of every row moved into BIG_ZIP (ids + 1000), so
    BIG_ZIP holds far more rows than any other zip. Returns BIG_ZIP's row count."""
    make_raw_table(url, zips=4, rows_per_zip=7)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO raw_companies SELECT id + 1000, %s, company_name, notes, employees, "
            "revenue, latitude, founded_date, updated_at FROM raw_companies",
            (BIG_ZIP,),
        )
    count = scalar(url, "SELECT count(*) FROM raw_companies WHERE zip_code = %s", (BIG_ZIP,))
    return int(count)  # type: ignore[call-overload]


def subtasks(url: str, run_id: str) -> list[tuple[int | None, int | None, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT split_lo, split_hi, state::text FROM etl.partitions "
            "WHERE run_id = %s AND part_key = %s ORDER BY split_lo NULLS FIRST",
            (run_id, BIG_ZIP),
        ).fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_a_skewed_zip_split_into_subtasks_lands_exactly_once_and_a_rerun_leaves_one_copy(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    big = make_skewed_table(stack.database_url)  # 7 + 42 = 49 rows
    start_worker(concurrency=2)

    first = enqueue(stack, "--all-zips", "--wait", "--split-rows", "10", "--transform", IDENTITY)
    run_id = first.stdout.splitlines()[0]

    pieces = subtasks(stack.database_url, run_id)
    assert len(pieces) == -(-big // 10)  # ceil(49 / 10) = 5 sub-tasks, each its own audit row
    assert pieces[0][0] is None and pieces[-1][1] is None  # open ends: the key space is tiled
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))  # no gaps
    assert {state for _, _, state in pieces} == {"finished"}
    assert table_difference(stack.database_url, "raw_companies", "clean_companies") == (0, 0)

    # Rerun the big zip split differently, then the whole table unsplit: one copy each time.
    enqueue(stack, "--zips", BIG_ZIP, "--wait", "--split-rows", "20", "--transform", IDENTITY)
    assert table_difference(stack.database_url, "raw_companies", "clean_companies") == (0, 0)
    enqueue(stack, "--all-zips", "--wait", "--split-rows", "0", "--transform", IDENTITY)
    assert table_difference(stack.database_url, "raw_companies", "clean_companies") == (0, 0)


def test_split_ranges_cut_a_partition_at_quantiles_of_the_split_key(fresh_database: str) -> None:
    with connect(fresh_database) as conn:
        conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, zip text)")
        conn.execute(
            "INSERT INTO t SELECT g, CASE WHEN g <= 1000 THEN 'a' END "
            "FROM generate_series(1, 1010) g"
        )
        zip_column = Column("zip", "text", "pg_catalog", "text", False)
        id_column = Column("id", "bigint", "pg_catalog", "int8", True)
        table = TableName("t")

        sizes = rows_per_partition(conn, table, zip_column)
        ranges = split_ranges(conn, table, zip_column, id_column, "a", 4)
        null_ranges = split_ranges(conn, table, zip_column, id_column, None, 2)

    assert sizes == {"a": 1000, None: 10}
    assert ranges == [(None, 250), (250, 500), (500, 750), (750, None)]
    assert null_ranges == [(None, 1005), (1005, None)]


def test_create_index_builds_the_missing_partition_index_instead_of_warning(stack: Stack) -> None:
    make_raw_table(stack.database_url, zips=2)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("DROP INDEX raw_companies_zip_code_idx")

    warned = enqueue(stack, "--all-zips", "--dry-run")
    indexed = enqueue(stack, "--all-zips", "--dry-run", "--create-index")

    assert "has no index on zip_code" in warned.stderr and "--create-index" in warned.stderr
    assert "has no index" not in indexed.stderr
    with connect(stack.database_url) as conn:
        assert has_index_on(conn, TableName("raw_companies"), "zip_code")
        valid = conn.execute(
            "SELECT indisvalid FROM pg_index "
            "WHERE indexrelid = 'raw_companies_zip_code_idx'::regclass"
        ).fetchone()
    assert valid == (True,)


def test_an_existing_target_without_a_partition_index_is_warned_about_or_indexed(
    stack: Stack,
) -> None:
    """Every task DELETEs its partition's earlier rows: without an index on the target,
    each DELETE scans the whole target."""
    make_raw_table(stack.database_url, zips=2)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE out_t (LIKE raw_companies)")

    warned = enqueue(stack, "--all-zips", "--target-table", "out_t", "--transform", IDENTITY)
    # One run per target at a time (no worker runs this one): cancel it before the next.
    enqueue(stack, "--cancel", warned.stdout.split()[0])
    indexed = enqueue(
        stack, "--all-zips", "--target-table", "out_t", "--transform", IDENTITY, "--create-index"
    )

    assert 'target table "out_t" has no index on zip_code' in warned.stderr
    assert "has no index" not in indexed.stderr
    with connect(stack.database_url) as conn:
        assert has_index_on(conn, TableName("out_t"), "zip_code")


def test_tasks_are_queued_biggest_partition_first(stack: Stack) -> None:
    big = make_skewed_table(stack.database_url)

    run_id = enqueue(stack, "--all-zips", "--dry-run", "--split-rows", "0").stdout.split()[0]

    with psycopg.connect(stack.database_url) as conn:
        first = conn.execute(
            "SELECT part_key FROM etl.partitions WHERE run_id = %s ORDER BY part_id LIMIT 1",
            (run_id,),
        ).fetchone()
    assert big > 7 and first == (BIG_ZIP,)  # sent first, so no worker waits on it at the end
