"""etl-sweep against a real database and Redis, with no worker running: the test plays the
dead worker (an expired lease) and the lost message (a message removed from Redis)."""

from __future__ import annotations

import json
import threading

import psycopg
import redis

from etl_worker.brokers import broker_task_ids
from etl_worker.celery_app import make_app
from etl_worker.config import Settings
from etl_worker.db import connect
from etl_worker.sweeper import SweepResult, take_turn_and_sweep
from tests.support.cli import IDENTITY, run_cli
from tests.support.data import audit_rows, make_raw_table, scalar
from tests.support.runs import start_run
from tests.support.services import Stack


def in_broker(stack: Stack) -> set[str]:
    return broker_task_ids(make_app(Settings.load(stack.env)), [stack.queue])


def test_etl_sweep_re_enqueues_a_zip_whose_lease_expired_with_a_fresh_task_id(
    stack: Stack,
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=3, rows_per_zip=2)
    run_id = start_run(stack.env, "--all-zips", "--transform", IDENTITY)
    with psycopg.connect(url, autocommit=True) as conn:  # a worker died holding zip 00001
        conn.execute(
            "UPDATE etl.partitions SET state = 'started', attempts = 1, worker = 'gone@box', "
            "lease_owner = 'box:4242:abc', lease_expires_at = now() - interval '1 second' "
            "WHERE run_id = %s AND part_key = '00001'",
            (run_id,),
        )
    before = audit_rows(url, run_id)

    swept = run_cli("etl-sweep", run_id, env=stack.env, check=True)
    again = run_cli("etl-sweep", run_id, env=stack.env, check=True)

    line = swept.stdout.strip()
    assert line.endswith(
        f"run {run_id}: re-enqueued 1 partition(s) whose lease expired (worker died): 00001"
    )
    after = audit_rows(url, run_id)
    row = after["00001"]
    assert row["state"] == "queued" and row["requeues"] == 1 and row["lease_owner"] is None
    assert row["attempts"] == 1  # the dead attempt still counts against ETL_MAX_ATTEMPTS
    assert "lease of box:4242:abc (worker gone@box) ran out at" in str(row["requeue_reason"])
    assert row["task_id"] != before["00001"]["task_id"]
    assert row["task_id"] in in_broker(stack)
    assert all(after[k]["task_id"] == before[k]["task_id"] for k in after if k != "00001")
    assert again.stdout.startswith("nothing to re-enqueue: no expired leases")


def test_etl_sweep_re_enqueues_exactly_the_zips_whose_message_vanished(stack: Stack) -> None:
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
    client = redis.Redis.from_url(stack.broker_url)
    queue, unacked = stack.prefix + stack.queue, stack.prefix + "unacked"
    by_id = {json.loads(m)["headers"]["id"]: m for m in client.lrange(queue, 0, -1)}
    vanished, held = str(before["00002"]["task_id"]), str(before["00000"]["task_id"])
    client.lrem(queue, 1, by_id[vanished])  # lost
    client.lrem(queue, 1, by_id[held])  # fetched by a (live) worker: in the unacked set
    client.hset(unacked, "tag-1", json.dumps([json.loads(by_id[held]), "", stack.queue]))

    fresh = run_cli("etl-sweep", run_id, env=env, check=True)  # too recent to call lost
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE etl.partitions SET queued_at = queued_at - interval '1 hour' WHERE run_id = %s",
            (run_id,),
        )
    swept = run_cli("etl-sweep", run_id, env=env, check=True)

    assert fresh.stdout.startswith("nothing to re-enqueue")
    assert swept.stdout.strip().endswith(
        f"run {run_id}: re-enqueued 1 partition(s) whose message was in no Redis queue "
        "after 60s: 00002"
    )
    after = audit_rows(url, run_id)
    changed = {k for k in after if after[k]["task_id"] != before[k]["task_id"]}
    assert changed == {"00002"}
    assert "in no Redis queue nor unacked set" in str(after["00002"]["requeue_reason"])
    assert after["00002"]["task_id"] in in_broker(stack)


def test_etl_sweep_names_an_unknown_run_and_watch_ends_with_the_run(stack: Stack) -> None:
    make_raw_table(stack.database_url, zips=1, rows_per_zip=1)
    run_id = start_run(stack.env, "--all-zips", "--transform", IDENTITY)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("UPDATE etl.partitions SET state = 'finished' WHERE run_id = %s", (run_id,))

    unknown = run_cli("etl-sweep", "no-such-run", env=stack.env)
    watched = run_cli(
        "etl-sweep", run_id, "--watch", "--interval", "0.2", env=stack.env, timeout=60
    )

    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: run 'no-such-run' not found")
    assert watched.returncode == 0 and watched.stdout == ""  # nothing to do, and it ended


def test_of_sweepers_trying_at_once_one_takes_the_turn_and_nobody_else_within_the_interval(
    stack: Stack,
) -> None:
    make_raw_table(stack.database_url, zips=1, rows_per_zip=1)
    start_run(stack.env, "--all-zips", "--transform", IDENTITY)  # the audit schema
    settings = Settings.load(stack.env | {"ETL_SWEEP_INTERVAL": "3600"})
    app = make_app(settings)
    workers = [f"w{i}@node" for i in range(4)]
    at_once = threading.Barrier(len(workers))
    turns: dict[str, SweepResult | None] = {}

    def try_to_sweep(name: str) -> None:
        with connect(settings.database_url) as conn:
            at_once.wait()  # every worker's UPDATE of the turn row at the same moment
            turns[name] = take_turn_and_sweep(settings, conn, by=name, app=app)

    threads = [threading.Thread(target=try_to_sweep, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    swept = [w for w in workers if turns[w] is not None]
    assert len(swept) == 1
    assert scalar(stack.database_url, "SELECT swept_by FROM etl.sweep_state") == swept[0]
    with connect(settings.database_url) as conn:  # later, still within the interval
        assert take_turn_and_sweep(settings, conn, by="late@node", app=app) is None
    manual = run_cli("etl-sweep", env=stack.env, check=True)  # an operator's: sweeps anyway
    assert manual.stdout.startswith("nothing to re-enqueue")


def test_etl_sweep_before_any_run_says_what_to_run_in_one_line(stack: Stack) -> None:
    # No sweeper service waits for the first run any more (the workers sweep, and their
    # sweep finds nothing to do without an audit schema: take_turn_and_sweep). A person
    # running etl-sweep on a database with no audit schema most likely pointed it at the
    # wrong one (issue 12): one line saying so, exit 1, never a warning every interval.
    result = run_cli("etl-sweep", env=stack.env)

    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith('error: no audit schema "etl" in database')
    assert len(result.stderr.splitlines()) == 1
