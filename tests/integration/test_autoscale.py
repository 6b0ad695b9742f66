"""Memory-aware autoscaling with real workers: `--autoscale=MAX,MIN` grows the pool with the
backlog, but never past what memory holds; worker_max_memory_per_child recycles processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import IDENTITY, enqueue
from tests.support.data import count_partitions, make_raw_table
from tests.support.services import Stack, Worker, wait_until
from tests.support.transforms import WAIT_FOR_GATE


def autoscaled(start_worker: Callable[..., Worker], bounds: str, **env: str) -> Worker:
    # AUTOSCALE_KEEPALIVE: the autoscaler looks every second instead of every 30.
    return start_worker(1, extra_args=[f"--autoscale={bounds}"], AUTOSCALE_KEEPALIVE="1", **env)


def test_with_memory_for_one_process_the_pool_stays_at_one_and_the_backlog_stays_in_redis(
    stack: Stack, start_worker: Callable[..., Worker], gate: Path
) -> None:
    make_raw_table(stack.database_url, zips=4, rows_per_zip=3)  # 6 partitions
    worker = autoscaled(
        start_worker, "4,1", ETL_WORKER_MEMORY="300MiB", ETL_PROCESS_MEMORY="200MiB"
    )

    enqueue(stack, "--all-zips", "--transform", WAIT_FOR_GATE)
    wait_until(lambda: count_partitions(stack.database_url, "started") == 1, 60)
    pool_sizes = []
    for _ in range(8):  # several autoscaler rounds, with five partitions waiting
        pool_sizes.append(len(worker.pool_pids()))
        time.sleep(0.5)

    assert max(pool_sizes) == 1
    assert count_partitions(stack.database_url, "started") == 1
    assert stack.queued() == 5  # not reserved by a worker that cannot run them
    assert "memory allows 1 pool process(es)" in worker.log()
    gate.unlink()
    wait_until(lambda: count_partitions(stack.database_url, "finished") == 6, 120)
    assert len(worker.pool_pids()) == 1


def test_with_memory_to_spare_the_pool_grows_to_max_under_a_backlog_and_shrinks_after(
    stack: Stack, start_worker: Callable[..., Worker], gate: Path
) -> None:
    make_raw_table(stack.database_url, zips=6, rows_per_zip=3)  # 8 partitions
    worker = autoscaled(start_worker, "3,1", ETL_PROCESS_MEMORY="64MiB")
    assert len(worker.pool_pids()) == 1

    enqueue(stack, "--all-zips", "--transform", WAIT_FOR_GATE)

    wait_until(lambda: len(worker.pool_pids()) == 3, 60, what="the pool to grow to 3")
    wait_until(lambda: count_partitions(stack.database_url, "started") == 3, 60)
    assert stack.queued() == 5
    gate.unlink()
    wait_until(lambda: count_partitions(stack.database_url, "finished") == 8, 120)
    wait_until(lambda: len(worker.pool_pids()) == 1, 60, what="the pool to shrink back to 1")


def test_a_process_over_max_memory_per_child_is_replaced_after_its_task(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    make_raw_table(stack.database_url, zips=1, rows_per_zip=3)  # 3 partitions
    worker = start_worker(concurrency=1, ETL_MAX_MEMORY_PER_CHILD="1MiB")
    first = worker.pool_pids()

    enqueue(stack, "--all-zips", "--transform", IDENTITY, "--wait")

    assert count_partitions(stack.database_url, "finished") == 3
    last = wait_until(lambda: worker.pool_pids(), 30, what="a pool process")
    assert len(first) == 1 and set(first).isdisjoint(last)  # type: ignore[arg-type]


#: Builds the autoscaler as the worker does, then makes the background thread's read again,
#: recording every module imported and the thread that imported it.
IMPORTS_BY_THREAD = """
import sys, threading
from etl_worker.ops.autoscale import MemoryAwareAutoscaler

class Recorder:
    def find_spec(self, name, path=None, target=None):
        print(name, threading.current_thread().name)
        return None

sys.meta_path.insert(0, Recorder())
autoscaler = MemoryAwareAutoscaler(None, 2, 1)
if autoscaler.measured._thread is not None:
    autoscaler.measured._thread.join()
again = threading.Thread(target=autoscaler.measured.refresh, name="etl-need")
again.start()
again.join()
"""


def test_the_memory_refresh_thread_imports_nothing_so_a_fork_cannot_inherit_an_import_lock(
    fresh_database: str,
) -> None:
    # A module being imported by another thread while the pool forks stays locked for good
    # in the new process: its next import of that module hangs. So every import the
    # background refresh needs happens in the worker's main thread, as it starts.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    env["ETL_DATABASE_URL"] = fresh_database.replace("127.0.0.1", "localhost")  # a host name
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_BY_THREAD],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    imports = [line.split() for line in result.stdout.splitlines()]
    assert imports, "the refresh imported nothing at all: the recorder did not run"
    assert {thread for _, thread in imports} == {"MainThread"}, imports
