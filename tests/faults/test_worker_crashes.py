"""Workers that die: a pool process killed, a whole node killed, a warm shutdown, a
partition too big for its worker. Real `celery worker` processes, real signals.

Every test ends with the target exactly right (each zip's rows present once: EXCEPT ALL both
ways against the raw table) and the audit table telling what happened.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from tests.support.cgroups import MemoryLimit
from tests.support.data import audit_rows, make_raw_table, table_difference
from tests.support.rabbit import BOTH_BROKERS, BROKER_NAMES
from tests.support.reliability import exactly_once, record
from tests.support.runs import SLOW, WaitingProducer, rows_in_state, start_run, wait_for_run_end
from tests.support.services import Stack, Worker, wait_until
from tests.support.timings import LEASE_3S
from tests.support.transforms import EAT_MEMORY

pytestmark = pytest.mark.faults


def lease_pid(row: dict[str, object]) -> int:
    """The pool process holding a partition's lease (owner is host:pid:token)."""
    return int(str(row["lease_owner"]).split(":")[1])


@BOTH_BROKERS
def test_a_pool_process_killed_mid_task_is_requeued_at_once_and_finishes_on_another(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=4, rows_per_zip=5)
    worker = start_worker(concurrency=2, ETL_TEST_SLEEP="2")
    run_id = start_run(stack.env, "--all-zips", "--transform", SLOW)

    running = wait_until(lambda: rows_in_state(url, run_id, "started"), what="a started zip")
    zip_code, row = next(iter(running.items()))  # type: ignore[attr-defined]
    victim = lease_pid(row)
    assert victim in worker.pool_pids()
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(
        lambda: rows_in_state(url, run_id, "finished").get(zip_code),
        timeout=120,
        what=f"zip {zip_code!r} to finish after its process was killed",
    )
    recovered = time.monotonic() - killed
    wait_for_run_end(url, run_id)

    rows = audit_rows(url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    # The kill cost one attempt; the redelivery took the dead process's lease over at once.
    assert rows[zip_code]["attempts"] == 2
    assert all(r["attempts"] == 1 for k, r in rows.items() if k != zip_code)
    assert "WorkerLostError" in worker.log()
    exactly_once(
        url,
        "pool process SIGKILLed mid-task",
        "os.kill(pool pid from the zip's lease, SIGKILL) while its transform runs",
        "message requeued at once (reject_on_worker_lost) to the back of the queue; its "
        "next delivery took the dead process's lease over and finished the zip (attempts=2)",
        recovery_seconds=recovered,
    )


@BOTH_BROKERS
def test_a_dead_node_s_zips_are_swept_by_the_other_workers_and_redelivery_changes_nothing(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=10, rows_per_zip=5)
    env = LEASE_3S | {"ETL_TEST_SLEEP": "1"}
    survivor = start_worker(concurrency=1, name="survivor@%h", **env)
    victim = start_worker(concurrency=2, name="victim@%h", **env)
    # Enqueued without --wait, and no etl-sweep, no beat: the workers alone recover the zips.
    run_id = start_run(stack.env | LEASE_3S, "--all-zips", "--transform", SLOW)

    def victim_busy() -> dict[str | None, dict[str, object]] | None:
        rows = audit_rows(url, run_id)
        mine = {k: r for k, r in rows.items() if str(r["worker"]).startswith("victim@")}
        done = [r for r in mine.values() if r["state"] == "finished"]
        running = {k: r for k, r in mine.items() if r["state"] == "started"}
        return running if done and running else None

    wait_until(victim_busy, timeout=120, what="the victim node to finish a zip and start more")
    victim.kill_group()  # SIGKILL to the node's whole process group, as a terminated machine
    killed, killed_at = time.monotonic(), time.time()
    in_flight = {
        k: r
        for k, r in rows_in_state(url, run_id, "started").items()
        if str(r["worker"]).startswith("victim@")
    }
    assert in_flight, "the victim died holding no zip: nothing to recover"

    def swept() -> bool:
        rows = audit_rows(url, run_id)
        return all(rows[k]["requeues"] for k in in_flight)

    wait_until(swept, timeout=60, interval=0.1, what="a worker's sweep to re-enqueue them")
    detected = time.monotonic() - killed
    wait_until(
        lambda: set(in_flight) <= set(rows_in_state(url, run_id, "finished")),
        timeout=120,
        interval=0.2,
        what="the dead node's zips to finish elsewhere",
    )
    recovered = time.monotonic() - killed
    wait_for_run_end(url, run_id)

    rows = audit_rows(url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    workers = {str(r["worker"]).split("@")[0] for r in rows.values()}
    assert workers == {"survivor", "victim"}  # both nodes took zips
    for key in in_flight:
        assert str(rows[key]["worker"]).startswith("survivor@")
        assert rows[key]["requeues"] == 1
        assert "with no outcome" in str(rows[key]["requeue_reason"])
        assert rows[key]["task_id"] != in_flight[key]["task_id"]  # a fresh message
    assert table_difference(url, "raw_companies", "clean_companies") == (0, 0)
    assert "whose lease expired (worker died)" in survivor.log()  # the survivor swept

    # The dead node's original messages come back: Redis keeps them unacked until the
    # visibility timeout, then the survivor restores them; RabbitMQ returns them to the
    # queue the moment the dead node's connection closes. Each delivery finds its zip
    # finished (or, on RabbitMQ, still leased: it waits for the lease, then finds it so).
    originals = [str(r["task_id"]) for r in in_flight.values()]
    wait_until(
        lambda: all(f"[{t}] succeeded" in survivor.log() for t in originals),
        timeout=90,
        what=f"{stack.broker} to redeliver the dead node's messages",
    )
    for task_id in originals:
        line = next(x for x in survivor.log().splitlines() if f"[{task_id}] succeeded" in x)
        assert "'status': 'skipped'" in line
    returned = max(received_at(survivor.log(), t) for t in originals) - killed_at
    if stack.broker == "amqp":
        assert returned < 3, f"RabbitMQ returned the dead node's messages after {returned}s"
        redelivery = (
            f"RabbitMQ returned the originals {returned:.1f} s after the kill (its connection "
            "closed), before the lease expired: their deliveries waited for the lease, then "
            "found the zips finished and did nothing"
        )
    else:  # 10 s after they were fetched (before the kill), at most 2 s late
        redelivery = (
            f"Redis's redelivery of the originals {returned:.1f} s after the kill (visibility "
            "timeout 10 s from their fetch) found them finished and did nothing"
        )
    assert audit_rows(url, run_id) == rows  # the redeliveries changed no audit row
    exactly_once(
        url,
        "whole worker node SIGKILLed mid-run",
        "killpg(node, SIGKILL) while it holds zips; a second node keeps running",
        f"{len(in_flight)} zip(s) re-enqueued {detected:.1f} s after the kill by the "
        "surviving worker's own sweep, with no producer waiting and no etl-sweep (lease "
        "expired; ETL_LEASE_SECONDS=3, ETL_SWEEP_INTERVAL=1), finished on the other node; "
        + redelivery,
        recovery_seconds=recovered,
    )


def received_at(log: str, task_id: str) -> float:
    """Wall-clock time (epoch seconds) of a worker log's first `Task ...[id] received`."""
    line = next(x for x in log.splitlines() if f"[{task_id}] received" in x)
    stamp = line[1 : line.index(": ")]  # [2026-12-01 15:46:25,026: INFO/MainProcess]
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


@BOTH_BROKERS
def test_warm_shutdown_finishes_running_zips_and_leaves_the_rest_queued(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=6, rows_per_zip=5)
    draining = start_worker(concurrency=2, name="draining@%h", ETL_TEST_SLEEP="3")
    run_id = start_run(stack.env, "--all-zips", "--transform", SLOW)
    wait_until(lambda: len(rows_in_state(url, run_id, "started")) == 2, what="two running zips")
    running = set(rows_in_state(url, run_id, "started"))

    draining.process.send_signal(signal.SIGTERM)  # as a scale-in or a deploy does
    stopping = time.monotonic()
    draining.process.wait(60)
    shutdown = time.monotonic() - stopping

    rows = audit_rows(url, run_id)
    for key in running:
        assert rows[key]["state"] == "finished"  # finished, not abandoned
        assert str(rows[key]["worker"]).startswith("draining@")
    waiting = [k for k, r in rows.items() if r["state"] != "finished"]
    assert waiting and all(rows[k]["state"] == "queued" for k in waiting)
    assert "Warm shutdown" in draining.log()

    start_worker(concurrency=2, name="next@%h", ETL_TEST_SLEEP="0")
    wait_for_run_end(url, run_id)
    rows = audit_rows(url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    assert {r["attempts"] for r in rows.values()} == {1}  # nothing was started twice
    assert {str(rows[k]["worker"]).split("@")[0] for k in waiting} == {"next"}
    exactly_once(
        url,
        "warm shutdown (SIGTERM) mid-run",
        "SIGTERM to the worker while 2 zips run",
        f"stopped taking work, finished its 2 running zips (shutdown took {shutdown:.1f} s), "
        f"left the rest queued in {BROKER_NAMES[stack.broker]}; a new worker ran them; every "
        "zip attempted once",
    )


@BOTH_BROKERS
def test_a_zip_over_the_memory_ceiling_or_killed_every_time_fails_clearly_without_a_loop(
    stack: Stack,
    start_worker: Callable[..., Worker],
    enqueue_and_wait: Callable[..., WaitingProducer],
    tmp_path: Path,
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=4, rows_per_zip=5)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO raw_companies (id, zip_code, company_name, notes) "
            "SELECT 100000 + g, '99999', 'Big Co ' || g, repeat('x', 200) "
            "FROM generate_series(1, 2000) g"
        )
    oom = tmp_path / "oom-zips.txt"
    oom.write_text("00001\n")  # its transform SIGKILLs its own process, every time
    worker = start_worker(
        concurrency=2,
        ETL_MEMORY_CEILING="64KiB",
        ETL_MAX_ATTEMPTS="3",
        ETL_TEST_KILL_FILE=str(oom),
        ETL_TEST_SLEEP="0",
    )

    producer = enqueue_and_wait(
        "--all-zips", "--transform", "tests.support.transforms:killed_on_marked_zips"
    )

    assert producer.wait(180) == 1, producer.stderr()  # the run ended, with failures
    run_id = producer.run_id
    rows = audit_rows(url, run_id)
    big, killed = rows.pop("99999"), rows.pop("00001")
    assert {r["state"] for r in rows.values()} == {"finished"}
    assert big["state"] == "failed" and big["attempts"] == 1
    assert big["error"] == (
        "partition 99999 (2,000 rows) is larger than the memory ceiling of 65,536 bytes "
        "(ETL_MEMORY_CEILING) — raise the ceiling on bigger workers, or split big partitions"
    )
    assert killed["state"] == "failed" and killed["attempts"] == 3
    assert "partition 00001 (5 rows): gave up after 3 attempts" in str(killed["error"])
    assert "etl-enqueue --resume " + run_id in str(killed["error"])
    # Killed by a SIGKILL the OOM killer did not send: no "out of memory?" hint.
    assert killed["death_cause"] == "signal"
    assert "was killed by signal 9 (SIGKILL)" in str(killed["error"])
    assert "out of memory" not in str(killed["error"])
    # Three deliveries died with their process; the fourth found the budget spent and failed
    # the zip at once, without waiting out the dead process's lease.
    assert worker.log().count("WorkerLostError('Worker exited prematurely: signal 9") == 3
    assert "partition 00001: leased by" not in worker.log()
    expected = (
        "(SELECT * FROM raw_companies WHERE zip_code NOT IN ('99999', '00001') "
        "OR zip_code IS NULL) AS expected"
    )
    lost, doubled = exactly_once(
        url,
        "partition over the memory ceiling",
        "2,000-row zip with ETL_MEMORY_CEILING=64KiB",
        "failed on its first attempt, audit error names the zip, its row count and the "
        "ceiling; the run finished every other zip",
        expected=expected,
    )
    record(
        "pool process SIGKILLed every time (not by the OOM killer)",
        "transform SIGKILLs its own process on one zip, ETL_MAX_ATTEMPTS=3",
        "the main process recorded each death (signal 9, the cgroup's OOM-kill count "
        "unchanged) and Celery requeued the message; failed after exactly 3 attempts (4th "
        "delivery), the error naming the zip, its rows and the last death, without the "
        "out-of-memory hint, and saying how to resume; no endless loop",
        rows_lost=lost,
        rows_doubled=doubled,
    )


def test_a_zip_whose_process_is_oom_killed_every_time_fails_with_the_out_of_memory_hint(
    memory_limit: Callable[[int], MemoryLimit],
    stack: Stack,
    start_worker: Callable[..., Worker],
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=3, rows_per_zip=5)
    limited = memory_limit(700 * 1024**2)  # a worker and its pool process fit; the hog not
    start_worker(
        concurrency=1,
        wrapper=limited.wrapper(),
        ETL_MAX_ATTEMPTS="2",
        ETL_TEST_OOM_ZIPS="00001",
    )
    run_id = start_run(stack.env, "--all-zips", "--transform", EAT_MEMORY)

    wait_for_run_end(url, run_id, timeout=120)

    rows = audit_rows(url, run_id)
    oom = rows.pop("00001")
    assert {r["state"] for r in rows.values()} == {"finished"}
    assert (oom["state"], oom["attempts"], oom["death_cause"]) == ("failed", 2, "oom")
    assert str(oom["error"]).startswith(
        "partition 00001 (5 rows): gave up after 2 attempts that died without finishing, "
        "killed by the OOM killer each time — out of memory? (last: pool process "
    )
    assert limited.oom_kills() == 2  # the kernel's own count: two real OOM kills
    exactly_once(
        url,
        "pool process OOM-killed every time (a real OOM kill)",
        "worker in a memory cgroup limited to 700 MiB; the transform of one zip allocates "
        "until the kernel's OOM killer kills its process; ETL_MAX_ATTEMPTS=2",
        "the main process saw each SIGKILL with the cgroup's oom_kill count rising and "
        "recorded an OOM kill on the attempt before Celery requeued the message; after 2 "
        "attempts the zip failed with 'killed by the OOM killer each time — out of memory?' "
        "and how to resume; every other zip finished",
        expected="(SELECT * FROM raw_companies WHERE zip_code <> '00001' OR zip_code IS NULL) "
        "AS expected",
    )
