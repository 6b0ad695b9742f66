"""One run at a time per target table: a second run on a table (however it names it) is
refused while another run on it is unfinished, with the two ways out; `--cancel` is one of
them, and a cancelled run can be resumed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from etl_worker import pipeline, producer
from etl_worker.config import Settings
from etl_worker.context import WorkerContext
from etl_worker.partition import PartitionKey
from tests.support import transforms
from tests.support.cli import IDENTITY, enqueue, run_cli
from tests.support.data import audit_rows, make_raw_table, scalar, table_difference
from tests.support.reliability import record
from tests.support.services import Stack, Worker, wait_until


def test_a_second_run_on_a_busy_target_is_refused_until_the_first_is_cancelled_then_resumed(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=3, rows_per_zip=4)
    first = enqueue(stack, "--all-zips", "--transform", IDENTITY).stdout.splitlines()[0]

    # The same table by another name, and split otherwise: refused, nothing recorded.
    second = enqueue(
        stack,
        "--zips",
        "00001",
        "--target-table",
        "public.clean_companies",
        "--split-rows",
        "2",
        check=False,
    )
    assert second.returncode == 1
    (line,) = second.stderr.strip().splitlines()
    assert line.startswith(f"error: run {first} is still writing")
    assert f"etl-status {first} --wait" in line and f"etl-enqueue --cancel {first}" in line
    assert scalar(url, "SELECT count(*) FROM etl.runs") == 1

    cancelled = enqueue(stack, "--cancel", first)
    assert cancelled.stdout.splitlines()[0] == first
    assert "cancelled 5 unfinished partition(s)" in cancelled.stderr
    status = run_cli("etl-status", first, env=stack.env, check=True).stdout
    assert "cancelled 5" in status and "complete" in status
    assert f"etl-enqueue --resume {first}" in status

    # Workers skip the cancelled run's messages, and the second run may start.
    worker = start_worker(concurrency=2)
    wait_until(
        lambda: worker.log().count("already cancelled in this run") == 5,
        timeout=60,
        what="the cancelled run's messages to be skipped",
    )
    assert scalar(url, "SELECT count(*) FROM clean_companies") == 0
    second_run = enqueue(stack, "--zips", "00001", "--wait", "--transform", IDENTITY)
    assert second_run.returncode == 0

    # Resumed, the cancelled run runs every zip.
    resumed = enqueue(stack, "--resume", first, "--wait")
    assert "re-enqueued 5 partitions" in resumed.stderr
    assert set(r["state"] for r in audit_rows(url, first).values()) == {"finished"}
    assert table_difference(url, "raw_companies", "clean_companies") == (0, 0)
    record(
        "a second run on a target with an unfinished run",
        "etl-enqueue on public.clean_companies, split otherwise, while a run on "
        "clean_companies had 5 queued zips; then etl-enqueue --cancel, a worker, --resume",
        "refused in one line naming the unfinished run, `etl-status RUN --wait` and "
        "`etl-enqueue --cancel RUN`, nothing recorded; --cancel marked its 5 zips cancelled, "
        "the worker skipped their messages, the second run ran; --resume ran the 5 again",
        rows_lost=0,
        rows_doubled=0,
    )


def test_a_partition_cancelled_mid_transform_writes_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker is transforming a partition when its run is cancelled: its write re-checks
    the partition's state holding its audit row, and writes nothing."""
    url = stack.database_url
    make_raw_table(url, zips=2, rows_per_zip=4)
    in_transform, go_on = threading.Event(), threading.Event()

    def hold(_df: object) -> None:
        in_transform.set()
        assert go_on.wait(60)

    monkeypatch.setattr(transforms, "IN_PROCESS_GATE", hold)
    settings = Settings.load(stack.env, transform=transforms.IN_PROCESS)
    run = producer.enqueue_run(settings, zips=["00001"])
    query = "SELECT part_id FROM etl.partitions WHERE run_id = %s"
    part_id = int(str(scalar(url, query, (run.run_id,))))
    outcome: dict[str, Any] = {}

    def deliver() -> None:
        ctx = WorkerContext(settings, worker_name="w")
        try:
            got = pipeline.run_partition(ctx, run.run_id, part_id, PartitionKey("00001"), "t")
            outcome.update(status=got.status, detail=got.detail)
        finally:
            ctx.close()

    thread = threading.Thread(target=deliver)
    thread.start()
    assert in_transform.wait(60)
    assert producer.cancel_run(settings, run.run_id) == 1
    go_on.set()
    thread.join(60)

    assert outcome["status"] == "skipped" and "cancelled" in outcome["detail"]
    assert audit_rows(url, run.run_id)["00001"]["state"] == "cancelled"
    assert scalar(url, "SELECT count(*) FROM clean_companies") == 0
