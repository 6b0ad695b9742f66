"""Start runs with the real CLI and follow them through the audit table, for tests that do
something to the fleet while a run is going."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg

from tests.support.cli import REPO, command_path, run_cli
from tests.support.data import audit_rows
from tests.support.services import wait_until

SLOW = "tests.support.transforms:slow_identity"


def start_run(env: Mapping[str, str], *args: str) -> str:
    """`etl-enqueue ARGS` (without --wait) in the environment `env`; returns the run id."""
    return run_cli("etl-enqueue", *args, env=env, check=True).stdout.splitlines()[0]


class WaitingProducer:
    """`etl-enqueue ARGS --wait` running in the background (it sweeps while it waits). Its
    stderr (progress, sweep reports) goes to a file: a pipe nobody reads would fill up and
    stall it."""

    def __init__(self, env: Mapping[str, str], args: tuple[str, ...], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(
            [str(command_path("etl-enqueue")), *args, "--wait"],
            env=dict(env),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.process.stdout is not None
        self.run_id = self.process.stdout.readline().strip()

    def wait(self, timeout: float) -> int:
        """Its exit code; fails the test (with its stderr) when it does not end in time."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"etl-enqueue --wait still running:\n{self.stderr()}") from None

    def stdout(self) -> str:
        return self.process.stdout.read() if self.process.stdout else ""

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout:
            self.process.stdout.close()
        self._log.close()


def rows_in_state(url: str, run_id: str, *states: str) -> dict[str | None, dict[str, object]]:
    return {k: r for k, r in _rows(url, run_id).items() if r["state"] in states}


def _rows(url: str, run_id: str) -> dict[str | None, dict[str, object]]:
    """Audit rows, or {} while the database is unreachable (a test may have taken it down)."""
    try:
        return audit_rows(url, run_id)
    except psycopg.OperationalError:
        return {}


def wait_for_run_end(url: str, run_id: str, timeout: float = 180) -> float:
    """Wait until every partition is done (finished, failed, superseded or cancelled);
    returns the monotonic end time."""

    def ended() -> bool:
        rows = _rows(url, run_id)
        done = ("finished", "failed", "superseded", "cancelled")
        return bool(rows) and all(r["state"] in done for r in rows.values())

    wait_until(ended, timeout=timeout, interval=0.2, what=f"run {run_id} to end")
    return time.monotonic()
