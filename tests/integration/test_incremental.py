"""Incremental runs (issue 15 §1) with real workers: `--changed-since RUN_ID` enqueues only
the partitions whose raw rows, code or target changed since their last finished run, plus
new ones; an unchanged table enqueues nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.support.cli import IDENTITY, enqueue, run_json
from tests.support.data import make_raw_table, scalar, table_difference
from tests.support.services import Stack, Worker

#: make_raw_table(zips=6, rows_per_zip=5): 00000..00005, NULL and '' (8 partitions, ids 1-40).
ALL = {"00000", "00001", "00002", "00003", "00004", "00005", None, ""}


def run(stack: Stack, *args: str, **env: str) -> tuple[str, dict[str, Any], str]:
    """`etl-enqueue --all-zips ARGS --wait`: the run id, its etl-status JSON and stderr."""
    result = enqueue(stack, "--all-zips", *args, "--wait", **env)
    run_id = result.stdout.splitlines()[0]
    return run_id, run_json(stack, run_id), result.stderr


def keys(stack: Stack, run_id: str) -> set[str | None]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute("SELECT part_key FROM etl.partitions WHERE run_id = %s", (run_id,))
        return {r[0] for r in rows}


def sql(stack: Stack, *statements: str) -> None:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # test-owned SQL


def test_changes_of_every_kind_are_picked_up_and_nothing_else(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    make_raw_table(stack.database_url, zips=6, rows_per_zip=5)
    start_worker(concurrency=1)
    full, _, _ = run(stack, "--transform", IDENTITY)

    unchanged, status, stderr = run(stack, "--transform", IDENTITY, "--changed-since", full)

    assert keys(stack, unchanged) == set() and status["total"] == 0
    assert status["incremental"]["skipped"] == {"unchanged": 8}
    assert "enqueued 0 partitions" in stderr and "skipped 8 unchanged" in stderr

    sql(
        stack,
        "UPDATE raw_companies SET notes = 'updated' WHERE id = 1",  # 00000
        "INSERT INTO raw_companies (id, zip_code) VALUES (1000, '00001')",  # 00001
        "DELETE FROM raw_companies WHERE id = 11",  # 00002
        "UPDATE raw_companies SET zip_code = '00004' WHERE id = 16",  # moves 00003 -> 00004
        "UPDATE raw_companies SET employees = 7 WHERE id = 31",  # the NULL partition
        "INSERT INTO raw_companies (id, zip_code) VALUES (1001, '99999')",  # a new zip
    )
    changed, status, stderr = run(stack, "--transform", IDENTITY, "--changed-since", unchanged)

    assert keys(stack, changed) == {"00000", "00001", "00002", "00003", "00004", None, "99999"}
    assert status["total"] == 7 and status["states"]["finished"] == 7
    assert status["incremental"]["enqueued"] == {"new": 1, "raw_changed": 6}
    assert status["incremental"]["skipped"] == {"unchanged": 2}
    assert "skipped 2 unchanged" in stderr
    assert table_difference(stack.database_url, "raw_companies", "clean_companies") == (0, 0)

    # A chain: each partition is compared with the run that last wrote it (the full run for
    # the skipped ones, the last for the others), so nothing is left to do.
    again, status, _ = run(stack, "--transform", IDENTITY, "--changed-since", changed)
    assert keys(stack, again) == set() and status["incremental"]["skipped"] == {"unchanged": 9}


def test_a_vanished_partition_keeps_its_target_rows_unless_asked(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=6, rows_per_zip=5)
    start_worker(concurrency=1)
    full, _, _ = run(stack, "--transform", IDENTITY)
    sql(stack, "DELETE FROM raw_companies WHERE zip_code = '00005'")
    in_target = "SELECT count(*) FROM clean_companies WHERE zip_code = '00005'"

    kept, status, _ = run(stack, "--transform", IDENTITY, "--changed-since", full)

    assert keys(stack, kept) == set()
    assert status["incremental"]["skipped"] == {"unchanged": 7, "vanished_target_rows_kept": 1}
    assert scalar(url, in_target) == 5

    removed, status, _ = run(
        stack, "--transform", IDENTITY, "--changed-since", kept, "--delete-vanished"
    )

    assert keys(stack, removed) == {"00005"} and status["states"]["finished"] == 1
    assert status["incremental"]["enqueued"] == {"vanished": 1}
    assert scalar(url, in_target) == 0
    assert table_difference(url, "raw_companies", "clean_companies") == (0, 0)
    # Removed once: the next run counts it gone, not vanished.
    after, status, _ = run(
        stack, "--transform", IDENTITY, "--changed-since", removed, "--delete-vanished"
    )
    assert keys(stack, after) == set() and status["incremental"]["skipped"] == {"unchanged": 7}


def test_a_changed_transform_or_target_reruns_every_partition(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    make_raw_table(stack.database_url, zips=6, rows_per_zip=5)
    module = tmp_path / "incremental_transform.py"
    module.write_text("def run(df):\n    return df\n")
    path = {
        "PYTHONPATH": str(tmp_path),
        "ETL_TRANSFORM_MODULES": "tests.support.transforms,examples,incremental_transform",
    }
    worker = start_worker(concurrency=1, **path)
    transform = "incremental_transform:run"
    full, _, _ = run(stack, "--transform", transform, **path)

    # The same name, other code: the producer and a restarted worker see the new source.
    module.write_text("def run(df):\n    return df.assign(notes='v2')\n")
    worker.stop()
    start_worker(concurrency=1, **path)
    rerun, status, _ = run(stack, "--transform", transform, "--changed-since", full, **path)

    assert keys(stack, rerun) == ALL
    assert status["incremental"]["enqueued"] == {"transform_changed": 8}
    assert (
        scalar(stack.database_url, "SELECT count(*) FROM clean_companies WHERE notes = 'v2'") == 40
    )

    other, status, _ = run(
        stack,
        "--transform",
        transform,
        "--changed-since",
        rerun,
        "--target-table",
        "other",
        **path,
    )
    assert keys(stack, other) == ALL
    assert status["incremental"]["enqueued"] == {"target_changed": 8}


def test_a_split_partition_is_compared_whole(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    make_raw_table(stack.database_url, zips=2, rows_per_zip=6)
    start_worker(concurrency=1)
    split = ("--transform", IDENTITY, "--split-rows", "3")
    full, status, _ = run(stack, *split)
    assert status["total"] > 4  # the 4 partitions were split into more tasks

    unchanged, status, _ = run(stack, *split, "--changed-since", full)
    assert keys(stack, unchanged) == set()

    sql(stack, "UPDATE raw_companies SET notes = 'updated' WHERE id = 12")  # 00001's 2nd half
    changed, status, _ = run(stack, *split, "--changed-since", unchanged)
    assert keys(stack, changed) == {"00001"} and status["total"] == 2  # both of its tasks
    assert table_difference(stack.database_url, "raw_companies", "clean_companies") == (0, 0)


def test_a_run_without_raw_fingerprints_is_rerun_whole_by_the_next_incremental_run(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    make_raw_table(stack.database_url, zips=6, rows_per_zip=5)
    start_worker(concurrency=1)
    full, _, _ = run(stack, "--transform", IDENTITY, ETL_RAW_FINGERPRINTS="false")
    recorded = "SELECT count(*) FROM etl.partitions WHERE run_id = %s AND raw_rows IS NOT NULL"
    assert scalar(stack.database_url, recorded, (full,)) == 0

    # Nothing says the rows are unchanged: every partition runs again, none is skipped.
    rerun, status, stderr = run(stack, "--transform", IDENTITY, "--changed-since", full)
    assert keys(stack, rerun) == ALL
    assert status["incremental"]["enqueued"] == {"not_fingerprinted": 8}
    assert "8 not_fingerprinted" in stderr
    # That run took them (from its own comparison): the next one skips every partition.
    assert scalar(stack.database_url, recorded, (rerun,)) == 8
    again, status, _ = run(stack, "--transform", IDENTITY, "--changed-since", rerun)
    assert keys(stack, again) == set() and status["incremental"]["skipped"] == {"unchanged": 8}
