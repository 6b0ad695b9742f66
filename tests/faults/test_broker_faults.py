"""The broker goes away: Redis restarts mid-run (with and without persistence), messages
vanish from it, RabbitMQ restarts or drops every connection. Each test runs its own
redis-server or rabbitmq-server node (or, to drop connections, a RabbitMQ vhost of its
own); the shared ones are never touched."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.support.cli import run_cli
from tests.support.data import audit_rows, make_raw_table
from tests.support.rabbit import RabbitNode
from tests.support.reliability import exactly_once
from tests.support.runs import SLOW, WaitingProducer, rows_in_state, start_run, wait_for_run_end
from tests.support.servers import RedisServer
from tests.support.services import Stack, Worker, wait_until

pytestmark = pytest.mark.faults

#: Timings short enough for a test, in the order Settings requires: a task is killed
#: after 8 s, Redis redelivers an unacked message after 10 s (checked every 2 s).
SHORT_TIMINGS = {
    "ETL_LEASE_SECONDS": "4",
    "ETL_TASK_TIME_LIMIT": "8",
    "ETL_VISIBILITY_TIMEOUT": "10",
    "ETL_RETRY_BACKOFF_BASE": "0.5",
    "ETL_RETRY_BACKOFF_MAX": "3",
    # Lost messages are --resume's job in these tests, not the sweeper's.
    "ETL_SWEEP_AFTER": "600",
    "ETL_SWEEP_INTERVAL": "1",
}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    servers: list[RedisServer] = []

    def start(**options: object) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", **options)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def mid_run(url: str, run_id: str) -> bool:
    """Some zips finished, some running, some still queued."""
    rows = audit_rows(url, run_id)
    states = [r["state"] for r in rows.values()]
    return "finished" in states and "started" in states and "queued" in states


def cut_off_and_swept(
    rows: dict[str | None, dict[str, object]], running: set[str | None]
) -> set[str | None]:
    """The zips the sweeper sent again, each checked to have had an attempt cut off by the
    fault: two attempts or more. (Not `swept <= running`: a zip may start after `running`
    was read and before the fault.) A zip that sat in the queue and was sent twice would
    show one attempt. They join `running`, the zips the fault caught mid-partition."""
    swept = {k for k, r in rows.items() if r["requeues"]}
    assert all(int(str(rows[k]["attempts"])) >= 2 for k in swept), {k: rows[k] for k in swept}
    running |= swept
    return swept


def test_redis_restart_with_persistence_loses_no_queued_zip(
    stack: Stack,
    start_worker: Callable[..., Worker],
    redis_server: Callable[..., RedisServer],
    enqueue_and_wait: Callable[..., WaitingProducer],
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=10, rows_per_zip=5)
    redis = redis_server(persistent=True)
    env = SHORT_TIMINGS | {"ETL_BROKER_URL": redis.url, "ETL_TEST_SLEEP": "1"}
    worker = start_worker(concurrency=2, **env)
    producer = enqueue_and_wait("--all-zips", "--transform", SLOW, **env)
    run_id = producer.run_id
    wait_until(lambda: mid_run(url, run_id), timeout=120, what="the run to be under way")
    running = set(rows_in_state(url, run_id, "started"))

    redis.restart()  # SIGKILL, then start again on the same port and append-only file
    restarted = time.monotonic()

    assert producer.wait(180) == 0, producer.stderr()
    recovered = time.monotonic() - restarted
    rows = audit_rows(url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    # Running zips were cancelled on the connection loss and ended their lease. Their
    # messages came back either at once (the worker restored its unacked messages to the
    # restarted Redis) or, left in the persisted unacked set, were sent again by the sweeper
    # instead of waiting for the visibility timeout. No other zip needed sending again.
    swept = cut_off_and_swept(rows, running)
    assert all("with no outcome" in str(rows[k]["requeue_reason"]) for k in swept)
    assert "Connection to broker lost" in worker.log()
    exactly_once(
        url,
        "Redis restarts mid-run, with persistence",
        "SIGKILL redis-server (appendonly yes, appendfsync always), start it again",
        f"worker and waiting producer reconnected; the {len(running)} running zip(s) were "
        f"cancelled and ended their lease: {len(swept)} re-sent by the sweeper, "
        f"{len(running) - len(swept)} restored by the worker on reconnecting; no queued zip "
        "lost",
        recovery_seconds=recovered,
    )


def test_redis_restart_without_persistence_then_resume_sends_exactly_the_unfinished_zips(
    stack: Stack, start_worker: Callable[..., Worker], redis_server: Callable[..., RedisServer]
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=10, rows_per_zip=5)
    redis = redis_server(persistent=False)
    env = stack.env | SHORT_TIMINGS | {"ETL_BROKER_URL": redis.url, "ETL_TEST_SLEEP": "1"}
    worker = start_worker(concurrency=2, **env)
    run_id = start_run(env, "--all-zips", "--transform", SLOW)
    wait_until(lambda: mid_run(url, run_id), timeout=120, what="the run to be under way")
    running = set(rows_in_state(url, run_id, "started"))

    redis.restart()  # everything in Redis is gone: the queue and the unacked set
    restarted = time.monotonic()
    # Running zips are cancelled on connection loss and end their lease; the worker's own
    # sweep sends them again, and they finish. The queued zips' messages are gone with
    # Redis, and nothing sends them again before ETL_SWEEP_AFTER (600 s): --resume's job.
    wait_until(
        lambda: (
            running <= set(rows_in_state(url, run_id, "finished"))
            and not rows_in_state(url, run_id, "started", "retrying")
        ),
        timeout=60,
        what="the cancelled zips to be sent again and finish",
    )
    unfinished = set(rows_in_state(url, run_id, "queued"))
    assert unfinished, "the run finished before the restart: nothing was lost"
    assert stack_on(redis, stack).queued() == 0  # the restart emptied the queue

    before = audit_rows(url, run_id)
    resumed = run_cli("etl-enqueue", "--resume", run_id, env=env, check=True)

    assert f"re-enqueued {len(unfinished)} partitions" in resumed.stderr
    after = audit_rows(url, run_id)
    changed = {k for k in after if after[k]["task_id"] != before[k]["task_id"]}
    assert changed == unfinished  # exactly the zips that did not finish, each once
    wait_for_run_end(url, run_id)
    recovered = time.monotonic() - restarted
    rows = audit_rows(url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    assert "Connection to broker lost" in worker.log()
    swept = {k for k in running if rows[k]["requeues"]}
    exactly_once(
        url,
        "Redis restarts mid-run, without persistence",
        "SIGKILL redis-server (no AOF, no RDB), start it empty; then `etl-enqueue --resume`",
        f"queue and unacked set lost; the {len(running)} running zip(s) cancelled, ending "
        f"their lease: {len(swept)} sent again by the reconnected worker's own sweep, the "
        f"others restored by it, and finished; `--resume` re-enqueued exactly the "
        f"{len(unfinished)} zips whose messages were lost, and the worker finished them",
        recovery_seconds=recovered,
    )


def stack_on(redis: RedisServer, stack: Stack) -> Stack:
    """The test's stack, with the test's own redis-server as its broker."""
    return dataclasses.replace(stack, broker_url=redis.url)


def test_zips_whose_messages_vanished_are_swept_back_by_the_workers_or_beat(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=4, rows_per_zip=5)
    # Lost means: in no queue and no unacked set 6 s after it was sent (> visibility 5 s).
    timings = {
        "ETL_LEASE_SECONDS": "2",
        "ETL_TASK_TIME_LIMIT": "4",
        "ETL_VISIBILITY_TIMEOUT": "5",
        "ETL_RETRY_BACKOFF_MAX": "2",
        "ETL_SWEEP_AFTER": "6",
        "ETL_SWEEP_INTERVAL": "1",
    }
    run_id = start_run(stack.env | timings, "--all-zips", "--transform", SLOW)
    client = redis.Redis.from_url(stack.broker_url)
    assert client.delete(stack.prefix + stack.queue) == 1  # every message of the run is gone
    sent = time.monotonic()

    worker = start_worker(
        name="sweeper@%h",
        # -B runs beat inside this worker; it consumes the sweep queue too.
        extra_args=["-B", "-s", str(tmp_path / "beat-schedule"), "-Q",
                    f"{stack.queue},{stack.queue}.sweep"],
        ETL_TEST_SLEEP="0",
        **timings,
    )  # fmt: skip
    wait_for_run_end(url, run_id, timeout=120)
    recovered = time.monotonic() - sent

    rows = audit_rows(url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    assert {r["requeues"] for r in rows.values()} == {1}
    assert all(
        "in no Redis queue nor unacked set" in str(r["requeue_reason"]) for r in rows.values()
    )
    assert "re-enqueued 6 partition(s)" in worker.log()
    assert "Task etl.sweep[" in worker.log()  # beat's sweeps ran alongside, no harm done
    exactly_once(
        url,
        "queued messages vanish from Redis",
        "DEL the run's queue list right after enqueueing (as a Redis restart without "
        "persistence does)",
        "a sweep (the worker's own, or beat's etl.sweep: they take one turn per interval) "
        "found the 6 queued zips' task ids in no queue and no unacked set once older than "
        "ETL_SWEEP_AFTER=6 s, re-enqueued them once each; all finished",
        recovery_seconds=recovered,
    )


@pytest.fixture
def rabbit_node() -> Iterator[RabbitNode]:
    """A rabbitmq-server node of the test's own (the machine's is never restarted)."""
    node = RabbitNode()
    yield node
    node.stop()


def test_rabbitmq_restart_mid_run_loses_no_queued_zip(
    stack: Stack,
    start_worker: Callable[..., Worker],
    rabbit_node: RabbitNode,
    enqueue_and_wait: Callable[..., WaitingProducer],
) -> None:
    """The RabbitMQ form of the persistent-Redis restart: quorum queues write every message
    to disk before confirming it, so the queued zips survive a SIGKILL of the node."""
    url = stack.database_url
    make_raw_table(url, zips=10, rows_per_zip=5)
    env = SHORT_TIMINGS | {"ETL_BROKER_URL": rabbit_node.url, "ETL_TEST_SLEEP": "1"}
    worker = start_worker(concurrency=2, **env)
    producer = enqueue_and_wait("--all-zips", "--transform", SLOW, **env)
    run_id = producer.run_id
    wait_until(lambda: mid_run(url, run_id), timeout=120, what="the run to be under way")
    running = set(rows_in_state(url, run_id, "started"))

    rabbit_node.crash()  # SIGKILL the node; start it again on the same data directory
    crashed = time.monotonic()
    # A zip taken just before the crash counts as running; the rest waited in the queue.
    running |= set(rows_in_state(url, run_id, "started"))
    queued = set(rows_in_state(url, run_id, "queued"))
    rabbit_node.start()
    restarted, down = crashed, time.monotonic() - crashed

    assert producer.wait(180) == 0, producer.stderr()
    recovered = time.monotonic() - restarted
    rows = audit_rows(url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    # The zips queued at the restart came back from the quorum queue's log with their own
    # messages: none was sent again. Running zips were cancelled on the connection loss,
    # ended their lease, and came back with their message (never acked) or the sweeper.
    swept = cut_off_and_swept(rows, running)
    assert all("with no outcome" in str(rows[k]["requeue_reason"]) for k in swept)
    assert not {k for k in queued if rows[k]["requeues"]}
    assert "Connection to broker lost" in worker.log()
    exactly_once(
        url,
        "RabbitMQ restarts mid-run (quorum queue)",
        "SIGKILL the test's own rabbitmq-server node, start it again on its data directory "
        f"(down {down:.1f} s: the node takes that long to start)",
        f"worker and waiting producer reconnected; the {len(running)} running zip(s) were "
        f"cancelled and ended their lease: {len(swept)} re-sent by the sweeper, "
        f"{len(running) - len(swept)} redelivered by RabbitMQ (never acked); the "
        f"{len(queued)} queued zip(s) survived in the quorum queue, none sent again",
        recovery_seconds=recovered,
    )


@pytest.mark.parametrize("stack", ["amqp"], indirect=True)
def test_rabbitmq_closing_every_connection_of_the_vhost_mid_run_loses_nothing(
    stack: Stack,
    start_worker: Callable[..., Worker],
    enqueue_and_wait: Callable[..., WaitingProducer],
) -> None:
    """Every client connection of the fleet cut at once, the broker itself staying up
    (`rabbitmqctl close_all_connections --vhost`, the test's vhost alone): what a broker
    restart does to the clients, without its recovery time. Unacked messages go back to the
    queue at once; the running zips, cancelled, come back with them or through the sweeper."""
    url = stack.database_url
    make_raw_table(url, zips=10, rows_per_zip=5)
    env = SHORT_TIMINGS | {"ETL_TEST_SLEEP": "1"}
    worker = start_worker(concurrency=2, **env)
    producer = enqueue_and_wait("--all-zips", "--transform", SLOW, **env)
    run_id = producer.run_id
    wait_until(lambda: mid_run(url, run_id), timeout=120, what="the run to be under way")
    running = set(rows_in_state(url, run_id, "started"))

    stack.vhost.close_connections()
    dropped = time.monotonic()
    running |= set(rows_in_state(url, run_id, "started"))  # taken just before the close
    queued = set(rows_in_state(url, run_id, "queued"))

    assert producer.wait(180) == 0, producer.stderr()
    recovered = time.monotonic() - dropped
    rows = audit_rows(url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    swept = cut_off_and_swept(rows, running)
    assert not {k for k in queued if rows[k]["requeues"]}
    assert "Connection to broker lost" in worker.log()
    exactly_once(
        url,
        "the broker closes every connection of the fleet mid-run",
        "`rabbitmqctl close_all_connections --vhost` (the test's vhost alone), the broker up",
        f"worker and waiting producer reconnected; the {len(running)} running zip(s) were "
        f"cancelled and ended their lease: {len(swept)} re-sent by the sweeper, the others "
        "redelivered by RabbitMQ (never acked); no queued zip lost or sent again",
        recovery_seconds=recovered,
    )
