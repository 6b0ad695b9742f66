"""What a run guarantees when the raw table moves under it (issue 11, §8): with --snapshot
every partition reads the table as it was when the run was planned; without, each reads it
when it runs. A snapshot that is gone fails its partitions with a way out; --delete-vanished
removes the target rows of zips gone from the raw table, and nothing else."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.support.cli import IDENTITY, REPO, command_path, enqueue
from tests.support.data import make_raw_table, scalar, table_difference
from tests.support.reliability import exactly_once, record
from tests.support.services import Stack, Worker, wait_until
from tests.support.transforms import SIGNAL_THEN_WAIT


def start_enqueue(stack: Stack, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """etl-enqueue ... --wait in the background (it holds the snapshot while it waits)."""
    log = open(tmp_path / "enqueue.log", "w")
    return subprocess.Popen(
        [command_path("etl-enqueue"), *args],
        env=stack.env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )


def first_read(gate: Path) -> str:
    """The zip whose read is over and whose transform waits at the gate."""
    found = wait_until(lambda: list(gate.parent.glob(gate.name + ".read.*")), 60, what="a read")
    return found[0].name.rsplit(".", 1)[1]


def run_id_of(url: str) -> str:
    value = scalar(url, "SELECT run_id FROM etl.runs ORDER BY created_at DESC LIMIT 1")
    assert isinstance(value, str)
    return value


@pytest.mark.parametrize("snapshot", [True, False], ids=["snapshot", "no-snapshot"])
def test_a_row_moving_to_a_zip_already_read_is_written_once_with_snapshot_and_lost_without(
    stack: Stack,
    start_worker: Callable[..., Worker],
    gate: Path,
    tmp_path: Path,
    snapshot: bool,
) -> None:
    rows = make_raw_table(stack.database_url, zips=4)
    start_worker(concurrency=1)  # one partition at a time: the others read after the move
    flags = ["--snapshot"] if snapshot else []
    producer = start_enqueue(
        stack, tmp_path, "--all-zips", "--wait", *flags, "--transform", SIGNAL_THEN_WAIT
    )
    read = first_read(gate)
    # A row of a zip not read yet moves into the zip already read.
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        moved = conn.execute(
            "UPDATE raw_companies SET zip_code = %s WHERE id = (SELECT min(id) FROM "
            "raw_companies WHERE zip_code IS NOT NULL AND zip_code NOT IN ('', %s)) "
            "RETURNING id",
            (read, read),
        ).fetchone()
    assert moved is not None
    gate.unlink()
    assert producer.wait(120) == 0

    copies = scalar(
        stack.database_url, "SELECT count(*) FROM clean_companies WHERE id = %s", (moved[0],)
    )
    written = scalar(stack.database_url, "SELECT count(*) FROM clean_companies")
    assert isinstance(copies, int) and isinstance(written, int)
    if snapshot:
        # The run is one read of the table as it was: the row once, under its old zip.
        assert (copies, written) == (1, rows)
    else:
        # Its old zip was read after the move, its new one before: the row is missing.
        assert (copies, written) == (0, rows - 1)
    record(
        f"a row moves to a zip already read, mid-run ({'with' if snapshot else 'without'} "
        "--snapshot)",
        "UPDATE of one raw row's zip, from a zip not read yet to the zip read first, while "
        "that zip's transform waits (-c 1)",
        "one copy of the row, under the zip it had at enqueue: every zip read the exported snapshot"
        if snapshot
        else "the row was written by no zip: each zip reads the table when its task runs "
        "(the documented model; --snapshot is the opt-in)",
        rows_lost=rows - written,
        rows_doubled=max(0, copies - 1),
    )


def test_a_snapshot_gone_with_its_producer_fails_the_rest_clearly_and_resume_finishes_the_run(
    stack: Stack, start_worker: Callable[..., Worker], gate: Path, tmp_path: Path
) -> None:
    make_raw_table(stack.database_url, zips=4)
    start_worker(concurrency=1)
    producer = start_enqueue(
        stack, tmp_path, "--all-zips", "--wait", "--snapshot", "--transform", SIGNAL_THEN_WAIT
    )
    first_read(gate)
    run_id = run_id_of(stack.database_url)
    producer.send_signal(signal.SIGKILL)  # the producer dies: its transaction and snapshot end
    producer.wait(10)
    gate.unlink()

    def failed() -> list[tuple[str, str]]:
        with psycopg.connect(stack.database_url) as conn:
            return conn.execute(
                "SELECT state::text, coalesce(error, '') FROM etl.partitions WHERE run_id = %s "
                "AND state NOT IN ('finished')",
                (run_id,),
            ).fetchall()

    total = 6  # 4 zips, NULL and ''
    wait_until(lambda: len(failed()) == total - 1 and all(s == "failed" for s, _ in failed()), 90)
    for _, error in failed():
        assert "the run's snapshot is gone" in error
        assert f"etl-enqueue --resume {run_id}" in error

    resumed = enqueue(stack, "--resume", run_id, "--wait")
    assert resumed.returncode == 0
    assert scalar(stack.database_url, "SELECT snapshot_id FROM etl.runs") is None
    exactly_once(
        stack.database_url,
        "the --snapshot producer dies mid-run",
        "SIGKILL to etl-enqueue --snapshot --wait while the first zip's transform waits (-c 1)",
        f"the zip already read finished; the {total - 1} others failed at once with 'the "
        "run's snapshot is gone ... resume the run without a snapshot: etl-enqueue --resume "
        "RUN_ID'; --resume forgot the snapshot and finished them",
    )


def test_snapshot_needs_wait(stack: Stack) -> None:
    make_raw_table(stack.database_url, zips=1)
    refused = enqueue(stack, "--all-zips", "--snapshot", check=False)
    assert refused.returncode == 2 and "--snapshot needs --wait" in refused.stderr


def test_delete_vanished_removes_the_rows_of_zips_gone_from_the_raw_table_and_nothing_else(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=4)
    worker = start_worker(concurrency=2)
    enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY)
    with psycopg.connect(url, autocommit=True) as conn:
        gone = conn.execute(
            "DELETE FROM raw_companies WHERE zip_code = '00001' OR zip_code IS NULL"
        ).rowcount
    # Without the flag, a run leaves the vanished zips' rows where they were.
    enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY)
    assert table_difference(url, "raw_companies", "clean_companies") == (0, gone)
    # A target row no run wrote, of a zip the raw table still has: not a vanished zip's.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO clean_companies (id, zip_code) VALUES (-1, '00002')")
    before = scalar(url, "SELECT count(*) FROM clean_companies")
    worker.stop()  # nothing rewrites the target while we look at what the deletion did

    result = enqueue(stack, "--all-zips", "--delete-vanished", "--transform", IDENTITY)

    assert f"deleted {gone:,} target rows of 2 zips no longer in" in result.stderr
    assert scalar(url, "SELECT count(*) FROM clean_companies") == before - gone  # type: ignore[operator]
    assert scalar(url, "SELECT count(*) FROM clean_companies WHERE id = -1") == 1
    assert table_difference(url, "raw_companies", "clean_companies") == (0, 1)
    record(
        "zips vanish from the raw table (--delete-vanished)",
        "DELETE of one zip's and the NULL partition's raw rows after a run; a run without "
        "the flag, then one with it",
        f"without: the {gone} target rows stayed; with: etl-enqueue deleted exactly those "
        f"{gone} ('deleted {gone} target rows of 2 zips'), under the write path's per-zip "
        "locks, and kept a target row of a zip still in the raw table",
        rows_lost=0,
        rows_doubled=0,
    )
