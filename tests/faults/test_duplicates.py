"""The same zip delivered twice at once (a visibility-timeout redelivery, a restored message,
a sweep racing a slow worker): the deliveries are serialized per zip and the target ends with
one copy of its rows."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from etl_worker import pipeline, producer
from etl_worker.celery_app import TASK_NAME, make_app
from etl_worker.config import Settings
from etl_worker.context import WorkerContext
from etl_worker.partition import PartitionKey
from tests.support.data import audit_rows, make_raw_table
from tests.support.reliability import exactly_once
from tests.support.runs import SLOW, rows_in_state, start_run
from tests.support.services import Stack, Worker, wait_until

pytestmark = pytest.mark.faults


def test_a_second_message_for_a_running_zip_waits_for_it_and_then_does_nothing(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=2, rows_per_zip=5)
    worker = start_worker(concurrency=2, ETL_TEST_SLEEP="3", ETL_LEASE_SECONDS="4")
    run_id = start_run(stack.env, "--zips", "00001", "--transform", SLOW)
    running = wait_until(lambda: rows_in_state(url, run_id, "started"), what="the zip to start")
    part_id = _part_id(url, run_id, "00001")
    assert running

    duplicate = str(uuid.uuid4())  # a second message for the same partition, right now
    app = make_app(Settings.load(stack.env))
    app.send_task(
        TASK_NAME,
        kwargs={"run_id": run_id, "zip": "00001", "part_id": part_id},
        task_id=duplicate,
        queue=stack.queue,
    )
    sent = time.monotonic()
    wait_until(
        lambda: f"[{duplicate}] succeeded" in worker.log(),
        timeout=60,
        what="the duplicate delivery to end",
    )
    settled = time.monotonic() - sent

    log = worker.log()
    assert "partition 00001: leased by" in log  # it waited for the running delivery
    line = next(x for x in log.splitlines() if f"[{duplicate}] succeeded" in x)
    assert "'status': 'skipped'" in line  # ... then found the zip finished
    row = audit_rows(url, run_id)["00001"]
    assert row["state"] == "finished" and row["attempts"] == 1
    expected = "(SELECT * FROM raw_companies WHERE zip_code = '00001') AS expected"
    exactly_once(
        url,
        "the same zip delivered twice at once (message)",
        "a second message for a running zip's partition, published mid-task",
        "the second delivery saw the live lease, deferred until it would have lapsed, then "
        "found the zip finished and did nothing (attempts=1)",
        recovery_seconds=settled,
        expected=expected,
    )


def test_two_deliveries_past_the_claim_at_once_write_one_copy(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both deliveries get past the claim (the first one's lease expired under it, as when its
    heartbeat is starved): the write's advisory lock and re-check keep one copy."""
    url = stack.database_url
    make_raw_table(url, zips=2, rows_per_zip=5)
    monkeypatch.setenv("ETL_TEST_SLEEP", "2")
    settings = Settings.load(stack.env, transform=SLOW, lease_seconds=0.5)
    run = producer.enqueue_run(settings, zips=["00001"])  # no worker: the test delivers
    part_id = _part_id(url, run.run_id, "00001")
    outcomes: dict[str, Any] = {}

    def deliver(name: str) -> None:
        ctx = WorkerContext(settings, worker_name=name)
        ctx.heartbeat = _NoHeartbeat()  # type: ignore[assignment]
        try:
            outcome = pipeline.run_partition(
                ctx, run.run_id, part_id, PartitionKey("00001"), task_id=name
            )
            outcomes[name] = outcome.status
        except Exception as exc:  # recorded for the assertion below
            outcomes[name] = repr(exc)
        finally:
            ctx.close()

    first = threading.Thread(target=deliver, args=("first",))
    second = threading.Thread(target=deliver, args=("second",))
    first.start()
    time.sleep(1.0)  # the first delivery's lease (0.5 s, never renewed) has expired
    second.start()
    first.join(60)
    second.join(60)

    assert outcomes == {"first": "finished", "second": "skipped"}
    row = audit_rows(url, run.run_id)["00001"]
    assert row["state"] == "finished" and row["attempts"] == 2
    expected = "(SELECT * FROM raw_companies WHERE zip_code = '00001') AS expected"
    exactly_once(
        url,
        "the same zip delivered twice at once (both running)",
        "two pipeline.run_partition calls on one zip, the second claiming after the first's "
        "lease expired mid-transform",
        "both transformed; the writes serialized on the advisory lock and the second found "
        "the zip finished under it and wrote nothing",
        expected=expected,
    )


class _NoHeartbeat:
    """A heartbeat that never beats: the lease runs out while the work goes on."""

    def watch(self, part_id: int, owner: str) -> None:
        pass

    def unwatch(self) -> None:
        pass


def _part_id(url: str, run_id: str, key: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT part_id FROM etl.partitions WHERE run_id = %s AND part_key = %s",
            (run_id, key),
        ).fetchone()
    assert row is not None
    return int(row[0])
