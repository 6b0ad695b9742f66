"""A run that makes no progress says why: no worker consumes its queue, or its workers
cannot reach their database. Real workers, real `etl-enqueue --wait` and `etl-status`
subprocesses, and Flower's view of the same workers."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import IDENTITY, command_path, enqueue, run_cli
from tests.support.data import make_raw_table
from tests.support.reliability import record
from tests.support.services import Flower, Stack, Worker, wait_until, with_database


class Waiting:
    """`etl-enqueue ARGS` running in the background, its stderr in a file to read while it
    runs (a --wait that never ends is what these tests look at)."""

    def __init__(self, env: dict[str, str], args: list[str], log: Path) -> None:
        self.log = log
        self._file = open(log, "w")
        self.process = subprocess.Popen(
            [command_path("etl-enqueue"), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._file,
            text=True,
        )

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def said(self, text: str, timeout: float) -> float:
        """Seconds until `text` was in its stderr; fails the test after `timeout`."""
        started = time.monotonic()
        wait_until(
            lambda: text in self.stderr() or self.process.poll() is not None,
            timeout=timeout,
            interval=0.2,
            what=f"{text!r} from etl-enqueue --wait",
        )
        assert text in self.stderr(), self.stderr()
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._file.close()


def test_wait_and_status_say_no_worker_consumes_the_queue(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    make_raw_table(stack.database_url, zips=2)
    # A worker on another queue only: alive, answering, and of no use to this run.
    start_worker(concurrency=1, ETL_QUEUE=stack.queue + "-other")
    waiting = Waiting(
        stack.env, ["--all-zips", "--wait", "--transform", IDENTITY], tmp_path / "wait.log"
    )
    try:
        seconds = waiting.said(f"no worker is consuming queue {stack.queue}", timeout=30)
        assert seconds < 15
        record(
            "no worker consumes the run's queue",
            "`etl-enqueue --all-zips --wait` with the only worker on another queue",
            f"--wait said 'no worker is consuming queue Q (1 worker(s) answered, consuming "
            f"...)' {seconds:.1f} s after it started, and went on waiting; etl-status says "
            "the same",
            rows_lost=0,
            rows_doubled=0,
        )
        assert waiting.process.poll() is None  # it goes on waiting: a worker may come
    finally:
        waiting.stop()
    status = run_cli("etl-status", env=stack.env)
    assert status.returncode == 0, status.stderr
    assert f"fleet      no worker is consuming queue {stack.queue} (1 worker(s)" in status.stdout


def test_workers_that_cannot_reach_their_database_are_named_by_wait_status_and_flower(
    stack: Stack,
    start_worker: Callable[..., Worker],
    start_flower: Callable[..., Flower],
    tmp_path: Path,
) -> None:
    make_raw_table(stack.database_url, zips=2)
    wrong = with_database(stack.database_url, "etl_no_such_database")
    for _ in range(2):
        start_worker(concurrency=1, ETL_DATABASE_URL=wrong)
    waiting = Waiting(
        stack.env, ["--all-zips", "--wait", "--transform", IDENTITY], tmp_path / "wait.log"
    )
    try:
        seconds = waiting.said("2 workers cannot reach the database:", timeout=30)
        assert seconds < 15
        record(
            "workers pointed at a database that does not exist",
            "2 real workers with a wrong database name in ETL_DATABASE_URL; `etl-enqueue "
            "--all-zips --wait` on the right one",
            f"--wait said '2 workers cannot reach the database: ... does not exist (since "
            f"HH:MM:SS)' {seconds:.1f} s after it started (the workers' own words, over the "
            "broker); etl-status and Flower's /api/workers say the same",
            rows_lost=0,
            rows_doubled=0,
        )
        line = next(x for x in waiting.stderr().splitlines() if "cannot reach the" in x)
        assert 'database "etl_no_such_database" does not exist' in line
        assert "(since " in line
    finally:
        waiting.stop()

    status = run_cli("etl-status", "--json", env=stack.env)
    assert status.returncode == 0, status.stderr
    assert any(
        "2 workers cannot reach the database:" in line and "etl_no_such_database" in line
        for line in json.loads(status.stdout)["fleet"]
    )

    # Flower asks the workers for the same `stats` reply: its API carries the same words.
    flower = start_flower()

    def health() -> list[str]:
        workers = flower.get("/api/workers?refresh=1").json()
        return [
            (info.get("stats") or {}).get("etl", {}).get("summary", "")
            for info in workers.values()
            if isinstance(info, dict)
        ]

    summaries = wait_until(
        lambda: [s for s in health() if "cannot reach the database" in s], timeout=60, interval=1
    )
    assert len(summaries) == 2  # type: ignore[arg-type]
    assert all("etl_no_such_database" in s for s in summaries)  # type: ignore[union-attr]
    # ... and its worker page shows the section (its "Other" tab lists stats it does not know).
    name = next(iter(flower.get("/api/workers").json()))
    page = flower.get(f"/worker/{name}")
    assert page.status == 200
    assert "cannot reach the database" in page.body and "etl_no_such_database" in page.body


def test_a_healthy_fleet_adds_no_line_to_status(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    make_raw_table(stack.database_url, zips=2)
    start_worker(concurrency=1)
    run_id = enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY).stdout.split()[0]
    status = run_cli("etl-status", run_id, env=stack.env, check=True)
    assert "fleet" not in status.stdout
