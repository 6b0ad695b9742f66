"""What only RabbitMQ does: the queue a run is sent to (quorum, with a delivery limit), a
publish RabbitMQ refuses (publisher confirms), retries through native delayed delivery, and
the sweeper's question "is its message still queued" answered without reading messages.
Each test has a virtual host of its own on the machine's RabbitMQ (tests/support/rabbit.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from etl_worker.brokers import task_queue
from etl_worker.celery_app import make_app
from etl_worker.config import Settings
from tests.support.cli import IDENTITY, enqueue, run_cli
from tests.support.data import audit_rows, count_partitions, make_raw_table
from tests.support.rabbit import rabbitmqctl
from tests.support.runs import start_run, wait_for_run_end
from tests.support.services import Stack, Worker, wait_until
from tests.support.transforms import WAIT_FOR_GATE

pytestmark = pytest.mark.parametrize("stack", ["amqp"], indirect=True)


def queues(stack: Stack) -> dict[str, list[str]]:
    """name -> [type, arguments] of every queue in the stack's vhost. (Its message counts
    lag, refreshed every few seconds: `stack.queued()` asks the queue itself.)"""
    out = rabbitmqctl("list_queues", "-p", stack.vhost.name, "name", "type", "arguments")
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return {row[0]: row[1:] for row in rows if row[0] != "name"}


def test_a_run_goes_to_a_durable_quorum_queue_with_a_delivery_limit(stack: Stack) -> None:
    make_raw_table(stack.database_url, zips=4, rows_per_zip=2)

    enqueue(stack, "--all-zips", "--transform", IDENTITY)

    kind, arguments = queues(stack)[stack.queue]
    assert kind == "quorum"
    assert "x-delivery-limit" in arguments and "20" in arguments
    assert stack.queued() == 6  # 4 zips + the NULL and '' partitions


def test_a_publish_rabbitmq_refuses_fails_the_enqueue_with_the_resume_hint(stack: Stack) -> None:
    """Publisher confirms: a queue full by policy (max-length, reject-publish) nacks the
    publishes over its length. Without confirms they vanish and etl-enqueue says nothing."""
    # 50 partitions for a limit of 3: a quorum queue sees its length a little late, and a
    # short burst may all get in before it refuses any.
    make_raw_table(stack.database_url, zips=48, rows_per_zip=1)
    rabbitmqctl(
        "set_policy", "-p", stack.vhost.name, "--apply-to", "queues", "cap", "^etl-",
        '{"max-length": 3, "overflow": "reject-publish"}',
    )  # fmt: skip
    # The queue made now, and the policy seen in force on it: a quorum queue takes a policy
    # a moment after it is declared, and a publish before that is accepted.
    settings = Settings.load(stack.env)
    with make_app(settings).connection_for_write() as conn:
        task_queue(settings)(conn.default_channel).declare()
    wait_until(
        lambda: (
            f"{stack.queue}\tcap"
            in rabbitmqctl("list_queues", "-p", stack.vhost.name, "name", "policy")
        ),
        timeout=30,
        interval=0.5,
        what="the length policy to apply to the queue",
    )

    result = enqueue(stack, "--all-zips", "--transform", IDENTITY, check=False)

    assert result.returncode != 0
    assert "failed while enqueueing run" in result.stderr
    assert "etl-enqueue --resume" in result.stderr
    assert 3 <= stack.queued() < 50


def test_a_retry_waits_in_rabbitmq_s_delayed_queues_and_the_zip_finishes(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    """A transient error (a serialization failure on the write) retries with a countdown; on
    quorum queues the countdown waits in RabbitMQ (native delayed delivery, through the
    run queue's topic exchange), not unacked in a worker that a static prefetch would
    leave with one process fewer."""
    url = stack.database_url
    make_raw_table(url, zips=3, rows_per_zip=2)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE clean_companies (LIKE raw_companies INCLUDING DEFAULTS)")
        conn.execute("CREATE TABLE fail_once (done boolean NOT NULL)")
        conn.execute("INSERT INTO fail_once VALUES (false)")
        conn.execute(
            """
            CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.zip_code = '00001' AND NOT (SELECT done FROM fail_once) THEN
                    -- Its own transaction rolls back: remember the failure elsewhere.
                    PERFORM dblink_exec('dbname=' || current_database(),
                                        'UPDATE fail_once SET done = true');
                    RAISE EXCEPTION 'try again' USING ERRCODE = '40001';
                END IF;
                RETURN NEW;
            END $$
            """
        )
        conn.execute("CREATE EXTENSION IF NOT EXISTS dblink")
        conn.execute(
            "CREATE TRIGGER fail_once BEFORE INSERT ON clean_companies "
            "FOR EACH ROW EXECUTE FUNCTION fail_once()"
        )
    worker = start_worker(concurrency=1, ETL_RETRY_BACKOFF_BASE="1", ETL_RETRY_BACKOFF_MAX="2")

    run_id = start_run(stack.env, "--all-zips", "--transform", IDENTITY)
    wait_for_run_end(url, run_id, timeout=120)

    rows = audit_rows(url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    assert rows["00001"]["retries"] == 1
    log = worker.log()
    assert "retry: Retry in" in log
    assert "native delayed delivery do not support direct exchanges" not in log
    assert "Direct exchanges are not supported" not in log
    assert {f"celery_delayed_{n}" for n in range(28)} <= set(queues(stack))


def test_the_sweeper_calls_messages_lost_only_once_their_queue_has_drained(stack: Stack) -> None:
    """RabbitMQ cannot be asked about one message without taking it off the queue, so a
    waiting zip's message counts as lost when its queue holds no ready message at all."""
    url = stack.database_url
    make_raw_table(url, zips=3, rows_per_zip=2)
    env = stack.env | {
        "ETL_TASK_TIME_LIMIT": "4",
        "ETL_VISIBILITY_TIMEOUT": "5",
        "ETL_LEASE_SECONDS": "2",
        "ETL_RETRY_BACKOFF_MAX": "2",
        "ETL_SWEEP_AFTER": "60",
    }
    run_id = start_run(env, "--all-zips", "--transform", IDENTITY)
    before = audit_rows(url, run_id)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE etl.partitions SET queued_at = queued_at - interval '1 hour' WHERE run_id = %s",
            (run_id,),
        )

    waiting = run_cli("etl-sweep", run_id, env=env, check=True)  # messages still ready
    rabbitmqctl("purge_queue", "-p", stack.vhost.name, stack.queue)  # every message lost
    swept = run_cli("etl-sweep", run_id, env=env, check=True)

    assert waiting.stdout.startswith("nothing to re-enqueue")
    assert (
        f"run {run_id}: re-enqueued 5 partition(s) whose message was in no RabbitMQ queue "
        "after 60s" in swept.stdout
    )
    after = audit_rows(url, run_id)
    assert all(after[k]["task_id"] != before[k]["task_id"] for k in after)
    assert all(r["requeues"] == 1 for r in after.values())
    assert "its queue held no ready message" in str(after["00001"]["requeue_reason"])
    assert stack.queued() == 5  # sent again, once each


def test_etl_metrics_counts_the_queue_and_the_workers_tasks_without_the_management_plugin(
    stack: Stack, start_worker: Callable[..., Worker], gate: Path
) -> None:
    make_raw_table(stack.database_url, zips=8, rows_per_zip=2)  # 10 partitions
    enqueue(stack, "--all-zips", "--transform", WAIT_FOR_GATE)

    idle = json.loads(run_cli("etl-metrics", env=stack.env, check=True).stdout)
    start_worker(concurrency=2)
    wait_until(lambda: count_partitions(stack.database_url, "started") == 2, 60)
    busy = json.loads(run_cli("etl-metrics", env=stack.env, check=True).stdout)

    assert (idle["queued"], idle["in_flight"], idle["workers"]) == (10, 0, 0)
    # Waiting: the queue's ready messages (passive queue.declare). In flight: what the
    # worker reports running or reserved; a prefetch of 2 is both its running tasks.
    assert (busy["queued"], busy["in_flight"]) == (8, 2)
    assert (busy["workers"], busy["processes"]) == (1, 2)
    assert busy["backlog_per_worker"] == 5.0
    gate.unlink()


def test_etl_demo_runs_on_rabbitmq_when_the_url_says_so(stack: Stack, tmp_path: Path) -> None:
    """The demo's embedded-Redis fallback is for a Redis URL that does not answer; an amqp://
    URL is used as it is, not replaced by a Redis of the demo's own."""
    state = tmp_path / "demo"
    result = run_cli(
        "etl-demo",
        *("--rows", "20", "--zips", "2", "--processes", "1", "--state-dir", str(state)),
        env=stack.env,
        timeout=240,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "no Redis answered" not in output
    assert f"transport:   amqp://guest:**@127.0.0.1:5672/{stack.vhost.name}" in (
        (state / "worker.log").read_text(errors="replace")
    )
