"""Commands that wait outlive the database restarting under them: `etl-enqueue --wait`,
`etl-sweep RUN --watch` and `etl-status RUN --watch` each say once that it is away, wait,
say when it is back, and follow the run to its end. The test's own cluster is restarted,
never the shared one."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.cli import command_path
from tests.support.data import make_raw_table
from tests.support.reliability import record
from tests.support.runs import SLOW, WaitingProducer, rows_in_state
from tests.support.servers import PostgresCluster
from tests.support.services import Stack, Worker, wait_until

pytestmark = pytest.mark.faults

AWAY = "the database is unreachable"
BACK = "the database is back after"


def connected(pid: int, port: int) -> bool:
    """The process holds a connection to the database on `port` (it is in its loop)."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    return any(c.raddr and c.raddr.port == port for c in conns)


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    server = PostgresCluster()
    try:
        yield server
    finally:
        server.stop()


def test_wait_sweep_watch_and_status_watch_wait_out_a_database_restart(
    stack: Stack,
    start_worker: Callable[..., Worker],
    cluster: PostgresCluster,
    tmp_path: Path,
) -> None:
    url = cluster.url()
    make_raw_table(url, zips=8, rows_per_zip=3)  # 10 partitions, ~1 s each
    env = stack.env | {
        "ETL_DATABASE_URL": url,
        "ETL_TEST_SLEEP": "1",
        "ETL_RETRY_BACKOFF_BASE": "0.2",
        "ETL_RETRY_BACKOFF_MAX": "2",
        "ETL_MAX_RETRIES": "30",
    }
    start_worker(concurrency=1, **env)
    producer = WaitingProducer(env, ("--all-zips", "--transform", SLOW), tmp_path / "wait.log")
    run_id = producer.run_id
    watchers: dict[str, subprocess.Popen[str]] = {}
    logs: dict[str, Path] = {}
    try:
        for name, args in (
            ("etl-sweep", [run_id, "--watch", "--interval", "1"]),
            ("etl-status", [run_id, "--watch", "--interval", "0.5"]),
        ):
            logs[name] = tmp_path / f"{name}.log"
            watchers[name] = subprocess.Popen(
                [command_path(name), *args],
                env=env,
                stdout=open(logs[name], "w"),
                stderr=subprocess.STDOUT,
                text=True,
            )
        wait_until(
            lambda: rows_in_state(url, run_id, "finished"), timeout=60, what="a finished zip"
        )
        for pid in [producer.process.pid] + [p.pid for p in watchers.values()]:
            wait_until(lambda p=pid: connected(p, cluster.port), timeout=60, what=f"{pid} in")
        cluster.crash()
        time.sleep(10)
        for name, process in watchers.items():
            assert process.poll() is None, f"{name} died:\n{logs[name].read_text()}"
        assert producer.process.poll() is None, producer.stderr()
        cluster.start()
        back = time.monotonic()
        texts = lambda: [producer.stderr()] + [p.read_text() for p in logs.values()]  # noqa: E731
        wait_until(lambda: all(BACK in t for t in texts()), timeout=60, what="every 'back'")
        noticed = time.monotonic() - back

        assert producer.wait(180) == 0, producer.stderr()
        for name, process in watchers.items():
            assert process.wait(120) == 0, logs[name].read_text()
    finally:
        producer.stop()
        for process in watchers.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for name, text in [("etl-enqueue", producer.stderr())] + [
        (n, p.read_text()) for n, p in logs.items()
    ]:
        assert text.count(AWAY) == 1, f"{name}:\n{text}"
        assert text.count(BACK) == 1, f"{name}:\n{text}"
        assert "Traceback" not in text, f"{name}:\n{text}"
    assert set(r["state"] for r in rows_in_state(url, run_id, "finished").values()) == {"finished"}
    assert len(rows_in_state(url, run_id, "finished")) == 10
    record(
        "Postgres restarts under the commands that wait",
        "pg_ctl stop -m immediate on the test's own cluster for 10 s while `etl-enqueue "
        "--wait`, `etl-sweep RUN --watch` and `etl-status RUN --watch` follow a run",
        "each said once 'the database is unreachable (...); waiting for it', went on "
        f"waiting, said 'the database is back' {noticed:.1f} s after it was, followed the "
        "run to its end and exited 0; no traceback",
        rows_lost=0,
        rows_doubled=0,
        recovery_seconds=noticed,
    )
