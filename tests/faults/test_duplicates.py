"""The same zip delivered twice at once (a visibility-timeout redelivery, a restored message,
a sweep racing a slow worker), written by two runs at once, read by a stale attempt, or named
wrongly by a message: the target ends with one copy of its rows, from the newest read."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import redis
from billiard.exceptions import SoftTimeLimitExceeded

from etl_worker import pipeline, producer, runguard
from etl_worker.audit import Audit
from etl_worker.celery_app import TASK_NAME, make_app
from etl_worker.config import Settings
from etl_worker.context import WorkerContext
from etl_worker.partition import PartitionKey
from etl_worker.reporting.status import format_status, run_status
from tests.support import transforms
from tests.support.cli import run_cli
from tests.support.data import audit_rows, make_raw_table, rows, scalar
from tests.support.reliability import exactly_once, record
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
    heartbeat is starved) and reach the write together (a barrier in the transform): the
    write re-checks, holding the audit row, that its attempt still holds the partition, so
    the first (stale) one writes nothing and the second writes one copy."""
    url = stack.database_url
    make_raw_table(url, zips=2, rows_per_zip=5)
    both_at_the_write = threading.Barrier(2, timeout=60)
    monkeypatch.setattr(transforms, "IN_PROCESS_GATE", lambda _df: both_at_the_write.wait())
    settings = Settings.load(stack.env, transform=transforms.IN_PROCESS, lease_seconds=0.5)
    run = producer.enqueue_run(settings, zips=["00001"])  # no worker: the test delivers
    part_id = _part_id(url, run.run_id, "00001")
    outcomes: dict[str, Any] = {}

    first = _delivery(settings, run.run_id, part_id, PartitionKey("00001"), "first", outcomes)
    second = _delivery(settings, run.run_id, part_id, PartitionKey("00001"), "second", outcomes)
    first.start()
    wait_until(lambda: _lease_owner(url, part_id).endswith(":first"), what="the first claim")
    time.sleep(1.0)  # the first delivery's lease (0.5 s, never renewed) has expired
    second.start()
    first.join(60)
    second.join(60)

    assert outcomes == {"first": "skipped", "second": "finished"}
    row = audit_rows(url, run.run_id)["00001"]
    assert row["state"] == "finished" and row["attempts"] == 2
    expected = "(SELECT * FROM raw_companies WHERE zip_code = '00001') AS expected"
    exactly_once(
        url,
        "the same zip delivered twice at once (both running)",
        "two pipeline.run_partition calls on one zip, the second claiming after the first's "
        "lease expired mid-transform; a barrier in the transform sends both to the write at "
        "once",
        "the write re-checked the lease owner holding the audit row: the stale first "
        "delivery wrote nothing, the second wrote one copy (attempts=2)",
        expected=expected,
    )


def test_writers_of_one_zip_in_two_runs_split_differently_never_interleave(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs (raced past the one-run-per-target check) write zip 00001 at once: one whole,
    named `clean_companies`, the other split in 3-row pieces, named
    `public.clean_companies`. Their DELETEs overlap but their old lock keys differed; now
    both lock (target oid, value) and the target ends with one copy of the zip. A trigger
    holds each write's COPY open for a second, so without the lock both would commit the
    rows the other could not see."""
    url = stack.database_url
    make_raw_table(url, zips=2, rows_per_zip=6)
    monkeypatch.setattr(runguard, "refuse_if_target_busy", lambda *_a, **_k: None)
    whole = Settings.load(stack.env, transform=transforms.IN_PROCESS, split_rows=0)
    run_a = producer.enqueue_run(whole, zips=["00001"])
    split = whole.replace(split_rows=3, target_table="public.clean_companies")
    run_b = producer.enqueue_run(split, zips=["00001"])
    with psycopg.connect(url, autocommit=True) as conn:  # test-owned DDL
        conn.execute(
            "CREATE FUNCTION hold_write() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE TRIGGER hold_write AFTER INSERT ON clean_companies "
            "FOR EACH STATEMENT EXECUTE FUNCTION hold_write()"
        )
    (a_part,) = _parts(url, run_a.run_id)
    b_parts = _parts(url, run_b.run_id)
    assert len(b_parts) == 2 and a_part[2] is None
    # B's piece with a lower bound: its old lock key differed from A's in the split too.
    b_race = next(p for p in b_parts if p[2] is not None)
    both_at_the_write = threading.Barrier(2, timeout=60)
    monkeypatch.setattr(transforms, "IN_PROCESS_GATE", lambda _df: both_at_the_write.wait())
    outcomes: dict[str, Any] = {}
    threads = [
        _delivery(whole, run_a.run_id, a_part[0], PartitionKey(*a_part[1:]), "a", outcomes),
        _delivery(split, run_b.run_id, b_race[0], PartitionKey(*b_race[1:]), "b", outcomes),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    monkeypatch.setattr(transforms, "IN_PROCESS_GATE", None)
    for part in b_parts:  # then B's other piece, as its worker would
        if part != b_race:
            _delivery(split, run_b.run_id, part[0], PartitionKey(*part[1:]), "b2", outcomes).run()

    # Whichever wrote second either replaced the first's rows (a newer read) or was
    # discarded as superseded (an older one): never both copies.
    assert set(outcomes.values()) <= {"finished", "superseded"}, outcomes
    states = _states(url, run_a.run_id) + _states(url, run_b.run_id)
    assert set(states) <= {"finished", "superseded"}, states
    expected = "(SELECT * FROM raw_companies WHERE zip_code = '00001') AS expected"
    exactly_once(
        url,
        "two runs write one zip at once, split differently, naming the target differently",
        "runs enqueued past the one-run-per-target check: zip 00001 whole into "
        "clean_companies, and in 3-row pieces into public.clean_companies; a barrier sends a "
        "whole and a piece to the write at once, a trigger holds each COPY open 1 s",
        f"both writes locked (target oid, zip) and ran one after the other "
        f"({outcomes['a']} / {outcomes['b']}); the zip is in the target once",
        expected=expected,
    )


def test_an_older_read_reaching_the_write_after_a_newer_run_wrote_is_discarded(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run A (slow transform) reads zip 00001; rows are added to it; run B reads and writes it
    and finishes; then A reaches its write. A's older read is discarded, its partition is
    `superseded` by B, and the target holds B's read, new rows included."""
    url = stack.database_url
    make_raw_table(url, zips=2, rows_per_zip=5)
    monkeypatch.setattr(runguard, "refuse_if_target_busy", lambda *_a, **_k: None)
    a_has_read, a_may_write = threading.Event(), threading.Event()

    def hold_run_a(_df: object) -> None:
        if threading.current_thread().name == "a":
            a_has_read.set()
            assert a_may_write.wait(60)

    monkeypatch.setattr(transforms, "IN_PROCESS_GATE", hold_run_a)
    settings = Settings.load(stack.env, transform=transforms.IN_PROCESS)
    run_a = producer.enqueue_run(settings, zips=["00001"])
    outcomes: dict[str, Any] = {}
    a_part = _part_id(url, run_a.run_id, "00001")
    a = _delivery(settings, run_a.run_id, a_part, PartitionKey("00001"), "a", outcomes)
    a.start()
    assert a_has_read.wait(60)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO raw_companies (id, zip_code, company_name) "
            "SELECT 1000 + i, '00001', 'added between the reads' FROM generate_series(1, 3) i"
        )
    run_b = producer.enqueue_run(settings, zips=["00001"])
    b_part = _part_id(url, run_b.run_id, "00001")
    _delivery(settings, run_b.run_id, b_part, PartitionKey("00001"), "b", outcomes).run()
    a_may_write.set()
    a.join(60)

    assert outcomes == {"a": "superseded", "b": "finished"}
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT state::text, superseded_by FROM etl.partitions WHERE part_id = %s",
            (a_part,),
        ).fetchone()
        status = format_status(run_status(Audit(conn, "etl"), run_a.run_id))
    assert row == ("superseded", run_b.run_id)
    assert f"superseded 1 partition(s) by run {run_b.run_id}" in status
    assert "complete" in status
    expected = "(SELECT * FROM raw_companies WHERE zip_code = '00001') AS expected"
    exactly_once(
        url,
        "a stale read reaches the write after a newer run wrote the zip",
        "run A's transform held after its read; 3 rows added to the zip; run B read, wrote "
        "and finished it; then A's write",
        "A's write compared its read's fence token (its snapshot's xmax) with B's and was "
        "discarded; A's partition marked superseded by B; the target holds B's read, with "
        "the 3 new rows",
        expected=expected,
    )


@pytest.mark.parametrize("ending", ["error", "soft_time_limit"])
def test_a_slow_attempt_taken_over_cannot_fail_the_partition_under_its_successor(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, ending: str
) -> None:
    """Attempt 1 is slow: its lease lapses and attempt 2 claims the partition. Attempt 1 then
    fails (its transform raises, or its soft time limit fires): marking the partition failed
    is a no-op, logged, and attempt 2 finishes it."""
    url = stack.database_url
    make_raw_table(url, zips=2, rows_per_zip=5)
    first_in, first_go = threading.Event(), threading.Event()
    second_in, second_go = threading.Event(), threading.Event()

    def gate(_df: object) -> None:
        if threading.current_thread().name == "first":
            first_in.set()
            assert first_go.wait(60)
            if ending == "error":
                raise ValueError("attempt 1 broke late")
            raise SoftTimeLimitExceeded()
        second_in.set()
        assert second_go.wait(60)

    monkeypatch.setattr(transforms, "IN_PROCESS_GATE", gate)
    settings = Settings.load(stack.env, transform=transforms.IN_PROCESS, lease_seconds=0.5)
    run = producer.enqueue_run(settings, zips=["00001"])
    part_id = _part_id(url, run.run_id, "00001")
    outcomes: dict[str, Any] = {}
    first = _delivery(settings, run.run_id, part_id, PartitionKey("00001"), "first", outcomes)
    second = _delivery(settings, run.run_id, part_id, PartitionKey("00001"), "second", outcomes)
    first.start()
    assert first_in.wait(60)
    time.sleep(1.0)  # attempt 1's lease (0.5 s, never renewed) lapses
    second.start()
    assert second_in.wait(60)  # attempt 2 holds the partition now
    first_go.set()
    first.join(60)

    row = audit_rows(url, run.run_id)["00001"]
    assert (row["state"], str(row["lease_owner"]).rsplit(":", 1)[-1]) == ("started", "second")
    assert "first no longer holds it" in caplog.text
    second_go.set()
    second.join(60)
    assert outcomes["second"] == "finished"
    assert "Error" in outcomes["first"] or "Exceeded" in outcomes["first"]
    row = audit_rows(url, run.run_id)["00001"]
    assert row["state"] == "finished" and row["attempts"] == 2
    expected = "(SELECT * FROM raw_companies WHERE zip_code = '00001') AS expected"
    exactly_once(
        url,
        f"a slow attempt, taken over, then ends ({ending.replace('_', ' ')})",
        "attempt 1's lease lapses mid-transform, attempt 2 claims; attempt 1 then "
        + ("raises" if ending == "error" else "hits its soft time limit"),
        "attempt 1's mark_failed named its lease owner and changed nothing (logged); the "
        "partition stayed attempt 2's, which finished it (attempts=2)",
        expected=expected,
    )


def test_a_message_naming_another_zip_than_its_audit_row_is_refused_and_counted(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    """A hand-sent task {run R, part P (zip 00001), zip 00002}: the worker writes nothing,
    logs and counts the refusal, and P stays queued."""
    url = stack.database_url
    make_raw_table(url, zips=3, rows_per_zip=5)
    settings = Settings.load(stack.env)
    run = producer.enqueue_run(settings, zips=["00001"])
    redis.Redis.from_url(stack.broker_url).delete(stack.prefix + stack.queue)  # its message
    part_id = _part_id(url, run.run_id, "00001")
    forged = str(uuid.uuid4())
    app = make_app(settings)
    app.send_task(
        TASK_NAME,
        kwargs={"run_id": run.run_id, "zip": "00002", "part_id": part_id},
        task_id=forged,
        queue=stack.queue,
    )
    worker = start_worker(concurrency=1)
    wait_until(lambda: f"[{forged}] succeeded" in worker.log(), timeout=60, what="the task")

    line = next(x for x in worker.log().splitlines() if f"[{forged}] succeeded" in x)
    assert "'status': 'refused'" in line
    assert "names partition 00002 but audit row" in worker.log()
    assert audit_rows(url, run.run_id)["00001"]["state"] == "queued"
    refused = scalar(url, "SELECT refused_messages FROM etl.runs WHERE run_id = %s", (run.run_id,))
    assert refused == 1
    assert scalar(url, "SELECT count(*) FROM clean_companies") == 0
    status = run_cli("etl-status", run.run_id, env=stack.env, check=True).stdout
    assert "mismatch   1 message(s)" in status
    record(
        "a message names another zip than its audit row",
        "celery send_task {run R, part P (zip 00001), zip 00002} to a real worker",
        "the claim compared the message with the audit row and refused it: nothing written, "
        "P left queued, runs.refused_messages = 1, logged by the worker and shown by etl-status",
        rows_lost=0,
        rows_doubled=0,
    )


def _delivery(
    settings: Settings,
    run_id: str,
    part_id: int,
    key: PartitionKey,
    name: str,
    outcomes: dict[str, Any],
) -> threading.Thread:
    """A thread named `name` that delivers the partition as a worker would (no heartbeat:
    the lease runs out while it works); its outcome lands in `outcomes[name]`."""

    def deliver() -> None:
        ctx = WorkerContext(settings, worker_name=name)
        ctx.heartbeat = _NoHeartbeat()  # type: ignore[assignment]
        try:
            outcome = pipeline.run_partition(ctx, run_id, part_id, key, task_id=name)
            outcomes[name] = outcome.status
        except Exception as exc:  # recorded for the assertions
            outcomes[name] = repr(exc)
        finally:
            ctx.close()

    return threading.Thread(target=deliver, name=name)


def _parts(url: str, run_id: str) -> list[tuple[Any, ...]]:
    """(part id, value, split lo, split hi) of each of the run's partitions."""
    query = "SELECT part_id, part_key, split_lo, split_hi FROM etl.partitions WHERE run_id = %s"
    return rows(url, query + " ORDER BY part_id", (run_id,))


def _states(url: str, run_id: str) -> list[str]:
    """The state of each of the run's partitions (split pieces each)."""
    query = "SELECT state::text FROM etl.partitions WHERE run_id = %s ORDER BY part_id"
    return [r[0] for r in rows(url, query, (run_id,))]


def _lease_owner(url: str, part_id: int) -> str:
    owner = scalar(url, "SELECT lease_owner FROM etl.partitions WHERE part_id = %s", (part_id,))
    return str(owner or "")


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
