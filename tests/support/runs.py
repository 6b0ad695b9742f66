"""Start runs with the real CLI and follow them through the audit table, for tests that do
something to the fleet while a run is going."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping

import psycopg

from tests.support.cli import REPO, command_path, run_cli
from tests.support.data import audit_rows
from tests.support.services import wait_until

IDENTITY = "etl_worker.transforms:identity"
SLOW = "tests.support.transforms:slow_identity"


def enqueue(env: Mapping[str, str], *args: str, check: bool = True) -> str:
    """`etl-enqueue ARGS` (without --wait); returns the run id."""
    result = run_cli("etl-enqueue", *args, env=env, check=check)
    return result.stdout.splitlines()[0]


def start_enqueue_and_wait(env: Mapping[str, str], *args: str) -> tuple[subprocess.Popen[str], str]:
    """`etl-enqueue ARGS --wait` in the background (it sweeps while it waits); returns the
    process and the run id it printed."""
    process = subprocess.Popen(
        [str(command_path("etl-enqueue")), *args, "--wait"],
        env=dict(env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def rows_in_state(url: str, run_id: str, *states: str) -> dict[str | None, dict[str, object]]:
    return {k: r for k, r in _rows(url, run_id).items() if r["state"] in states}


def _rows(url: str, run_id: str) -> dict[str | None, dict[str, object]]:
    """Audit rows, or {} while the database is unreachable (a test may have taken it down)."""
    try:
        return audit_rows(url, run_id)
    except psycopg.OperationalError:
        return {}


def wait_for_run_end(url: str, run_id: str, timeout: float = 180) -> float:
    """Wait until every partition is finished or failed; returns the monotonic end time."""

    def ended() -> bool:
        rows = _rows(url, run_id)
        return bool(rows) and all(r["state"] in ("finished", "failed") for r in rows.values())

    wait_until(ended, timeout=timeout, interval=0.2, what=f"run {run_id} to end")
    return time.monotonic()
