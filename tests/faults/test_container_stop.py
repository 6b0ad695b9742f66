"""`docker stop` on the worker container: SIGTERM goes to tini (the image's PID 1), which
forwards it to Celery's main process alone, so the warm shutdown lets the running partition
finish. Run here with the same tini, without a Docker engine."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import enqueue
from tests.support.data import count_partitions, make_raw_table
from tests.support.services import Stack, Worker, wait_until
from tests.support.transforms import WAIT_FOR_GATE


def tini() -> str:
    path = shutil.which("tini")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("tini is not installed: .ci/run must provide it in CI")
        pytest.skip("tini is not installed")
    return path


def test_sigterm_through_tini_lets_the_running_partition_finish_then_exits_cleanly(
    stack: Stack, start_worker: Callable[..., Worker], gate: Path
) -> None:
    make_raw_table(stack.database_url, zips=1, rows_per_zip=4)
    # -s: a subreaper, since here tini is not PID 1 as it is in the container.
    worker = start_worker(concurrency=1, wrapper=[tini(), "-s", "--"])
    enqueue(stack, "--zips", "00000", "--transform", WAIT_FOR_GATE)
    wait_until(lambda: count_partitions(stack.database_url, "started") == 1, 60)

    worker.process.send_signal(signal.SIGTERM)  # what `docker stop` sends to PID 1
    wait_until(lambda: "Warm shutdown" in worker.log(), 30, what="the warm shutdown")
    assert worker.process.poll() is None  # still waiting for its partition
    gate.unlink()

    assert worker.process.wait(60) == 0
    assert count_partitions(stack.database_url, "finished") == 1
    assert "WorkerLostError" not in worker.log()
