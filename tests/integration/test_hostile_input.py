"""Hostile and bad input: partition values and names are data, never SQL; secrets never
leak; workers never unpickle what arrives from the broker."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis
from psycopg import sql

from etl_worker.celery_app import TASK_NAME, make_app
from etl_worker.config import Settings
from tests.support.cli import IDENTITY, run_cli
from tests.support.data import audit_rows, make_raw_table, scalar, table_difference
from tests.support.reliability import exactly_once, record
from tests.support.runs import start_run, wait_for_run_end
from tests.support.servers import RedisServer
from tests.support.services import Stack, Worker, wait_until

HOSTILE_ZIPS = [
    "10016'; DROP TABLE raw_companies; --",
    'a"b',
    "%(part_key)s %s {schema}",
    "back\\slash",
]


def test_hostile_zip_values_are_processed_as_ordinary_partitions(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=2, rows_per_zip=3)
    with psycopg.connect(url, autocommit=True) as conn:
        for n, value in enumerate(HOSTILE_ZIPS):
            conn.execute(
                "INSERT INTO raw_companies (id, zip_code, company_name) VALUES (%s, %s, %s)",
                (1000 + n, value, f"Hostile {n}"),
            )
    start_worker(concurrency=2)

    run_id = start_run(stack.env, "--all-zips", "--transform", IDENTITY)
    wait_for_run_end(url, run_id)
    again = start_run(stack.env, "--zips", HOSTILE_ZIPS[0], "--transform", IDENTITY)
    wait_for_run_end(url, again)

    rows = audit_rows(url, run_id)
    assert set(HOSTILE_ZIPS) <= set(rows)
    assert {r["state"] for r in rows.values()} == {"finished"}
    assert audit_rows(url, again)[HOSTILE_ZIPS[0]]["rows_written"] == 1
    assert scalar(url, "SELECT to_regclass('raw_companies')") is not None  # still there
    exactly_once(
        url,
        "hostile partition values",
        "zips such as `10016'; DROP TABLE raw_companies; --`, `%(part_key)s %s {schema}`",
        "each processed as an ordinary partition (values are bound parameters), twice; "
        "raw table intact",
    )


def test_table_and_column_names_with_quotes_and_spaces_are_quoted_identifiers(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    raw, target, column = 'raw "companies" 2024', "clean o'brien", 'zip "code"'
    with psycopg.connect(url, autocommit=True) as conn:
        quoted = sql.Identifier(raw).as_string(conn)
    make_raw_table(url, table=quoted, zips=3, rows_per_zip=4)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME COLUMN zip_code TO {}").format(
                sql.Identifier(raw), sql.Identifier(column)
            )
        )
    start_worker(concurrency=2)
    names = ["--raw-table", raw, "--target-table", target, "--partition-column", column]

    result = run_cli(
        "etl-enqueue", "--all-zips", "--wait", "--transform", IDENTITY, *names, env=stack.env
    )

    assert result.returncode == 0, result.stderr
    with psycopg.connect(url) as conn:
        left = sql.Identifier(raw).as_string(conn)
        right = sql.Identifier(target).as_string(conn)
    assert table_difference(url, left, right) == (0, 0)
    assert len(audit_rows(url, result.stdout.splitlines()[0])) == 5


def test_unknown_or_hostile_names_are_a_clear_error_before_anything_is_enqueued(
    stack: Stack,
) -> None:
    url = stack.database_url
    make_raw_table(url)
    cases = {
        "raw_companies; DROP TABLE raw_companies": (
            "--raw-table",
            'error: table "raw_companies; DROP TABLE raw_companies" not found',
        ),
        "nosuch.clean_companies": (
            "--target-table",
            'error: schema "nosuch" of target table "nosuch.clean_companies" not found',
        ),
        'zip_code" OR 1=1 --': ("--partition-column", 'error: column "zip_code" OR 1=1 --"'),
    }
    for name, (flag, message) in cases.items():
        result = run_cli("etl-enqueue", "--all-zips", flag, name, env=stack.env)
        assert result.returncode == 1
        assert result.stderr.startswith(message), result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    assert scalar(url, "SELECT to_regclass('raw_companies')") is not None
    assert scalar(url, "SELECT to_regnamespace('etl')") is None  # no run, no audit rows
    assert stack.queued() == 0  # no message sent


def test_passwords_come_from_files_work_and_never_reach_logs_output_or_the_audit(
    stack: Stack, tmp_path: Path
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=3, rows_per_zip=3)
    redis_password = "redis-" + secrets.token_hex(8)
    db_password = "pg-" + secrets.token_hex(8)  # the test server trusts; the URL carries it
    broker = RedisServer(tmp_path / "redis", persistent=False, password=redis_password)
    files = {
        "ETL_BROKER_URL_FILE": (tmp_path / "broker-url", broker.url),
        "ETL_DATABASE_URL_FILE": (
            tmp_path / "database-url",
            url.replace("postgres@", f"postgres:{db_password}@"),
        ),
    }
    env = {k: v for k, v in stack.env.items() if k not in ("ETL_BROKER_URL", "ETL_DATABASE_URL")}
    for name, (path, value) in files.items():
        path.write_text(value + "\n")
        path.chmod(0o600)
        env[name] = str(path)
    worker = Worker(env, tmp_path / "worker.log", concurrency=1)
    outputs = []
    try:
        worker.wait_ready()
        ran = run_cli("etl-enqueue", "--all-zips", "--wait", "--transform", IDENTITY, env=env)
        run_id = ran.stdout.splitlines()[0]
        outputs += [ran, run_cli("etl-status", run_id, env=env), run_cli("etl-sweep", env=env)]
        wrong = env | {"ETL_BROKER_URL": broker.url.replace(redis_password, "wrong-" + db_password)}
        refused = run_cli("etl-enqueue", "--all-zips", env=wrong)
        outputs.append(refused)
        cmdline = Path(f"/proc/{worker.pid}/cmdline").read_bytes().decode(errors="replace")
    finally:
        worker.stop()
        broker.stop()

    assert ran.returncode == 0, ran.stderr
    lost, doubled = table_difference(url, "raw_companies", "clean_companies")
    assert (lost, doubled) == (0, 0)
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        "error: cannot connect to the broker at redis://:***@127.0.0.1"
    )
    with psycopg.connect(url) as conn:
        audit = conn.execute(
            "SELECT string_agg(r::text, ' ') FROM etl.runs r UNION ALL "
            "SELECT string_agg(p::text, ' ') FROM etl.partitions p"
        ).fetchall()
    places = {
        "worker log": worker.log(),
        "worker command line": cmdline,
        "CLI output": "".join(o.stdout + o.stderr for o in outputs),
        "audit tables": str(audit),
    }
    for place, text in places.items():
        for password in (redis_password, db_password):
            assert password not in text, f"a password leaked into the {place}"
    assert "redis://:**@127.0.0.1" in worker.log()  # Celery shows the URL redacted
    record(
        "passwords in the broker and database URLs",
        "redis-server with requirepass; both URLs (with passwords) only in ETL_*_FILE files; "
        "one enqueue with a wrong Redis password",
        "the run worked; the wrong password failed in one line with the URL redacted; neither "
        "password in the worker log, its command line, any CLI output or the audit tables",
        rows_lost=lost,
        rows_doubled=doubled,
    )


class _Trap:
    """Creates a file when unpickled: proof that a worker ran pickle.loads on a message."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.path,))


def test_a_pickled_task_message_is_refused_and_never_executed(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=1, rows_per_zip=3)
    run_id = start_run(stack.env, "--zips", "00000", "--transform", IDENTITY)  # no worker yet
    client = redis.Redis.from_url(stack.broker_url)
    client.delete(stack.prefix + stack.queue)  # drop the JSON message: only the pickle remains
    part_id = scalar(url, "SELECT part_id FROM etl.partitions WHERE run_id = %s", (run_id,))
    trap = tmp_path / "unpickled"
    app = make_app(Settings.load(stack.env))
    app.send_task(
        TASK_NAME,
        kwargs={"run_id": run_id, "zip": _Trap(trap), "part_id": part_id},
        queue=stack.queue,
        serializer="pickle",
    )

    worker = start_worker(concurrency=1)
    wait_until(lambda: "ContentDisallowed" in worker.log(), timeout=60, what="the refusal")
    time.sleep(1.0)  # give a wrongly accepted message time to run

    assert not trap.exists()
    assert "Refusing to deserialize untrusted content of type pickle" in worker.log()
    row = audit_rows(url, run_id)["00000"]
    assert row["state"] == "queued" and row["attempts"] == 0
    assert stack.queued() == 0  # refused, not requeued forever
    resumed = run_cli("etl-enqueue", "--resume", run_id, env=stack.env, check=True)
    assert "re-enqueued 1 partitions" in resumed.stderr
    wait_for_run_end(url, run_id)
    expected = "(SELECT * FROM raw_companies WHERE zip_code = '00000') AS expected"
    exactly_once(
        url,
        "a pickle-serialized task message",
        "publish etl.process_partition with serializer=pickle and an object whose "
        "unpickling would create a file",
        "worker refused it (ContentDisallowed: accept_content is JSON only), nothing ran, "
        "no file created; the zip stayed queued for --resume",
        expected=expected,
    )
