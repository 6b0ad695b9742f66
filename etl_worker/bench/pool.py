"""The queue-less script: what a careful engineer writes by hand with `multiprocessing.Pool`
and etl-worker's own read, transform and write paths, and nothing else.

Per zip, biggest first, in `procs` processes: read the partition with ADBC (binary COPY
into Arrow, `extract.read_arrow`), hand it to the transform as the worker does
(`frames.to_frame`), cast the output to the target's types (`load.to_arrow`), then DELETE
the zip's old rows and COPY the new ones (`load.ingest`) in one transaction. The run is
resolved with the worker's own `WorkerContext.prepare_run`. No queue, no audit rows, no
lease, no advisory lock: the gap between this line and etl-worker's is the
price of the fleet machinery.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from threading import Barrier

from etl_worker.bench.data import PARTITION_COLUMN, RawTable
from etl_worker.bench.exact import REFERENCE_ZIPS, check_output
from etl_worker.bench.inprocess import copy_partition, prepare
from etl_worker.bench.measure import Line, Server, drop_tables, fresh_target, process_pool, sampled
from etl_worker.config import Settings
from etl_worker.context import PreparedRun, WorkerContext
from etl_worker.db import TableName
from etl_worker.partition import PartitionKey


@dataclass
class _Process:
    """What one pool process keeps between zips (made once, in the pool's initializer)."""

    ctx: WorkerContext
    run: PreparedRun
    ready: Barrier


_process: _Process | None = None


def _start(
    settings: Settings, raw: TableName, target: TableName, transform: str, ready: Barrier
) -> None:
    global _process
    _process = _Process(*prepare(settings, raw, target, transform), ready)
    _process.ctx.adbc  # noqa: B018 -- connect before the clock starts, as workers are warm


def _ready(_: int) -> None:
    """Held until every process is ready: `procs` calls then land on `procs` processes."""
    assert _process is not None, "the pool's initializer did not run"
    _process.ready.wait(timeout=120)


def _zip(key: str | None) -> int:
    assert _process is not None, "the pool's initializer did not run"
    return copy_partition(_process.ctx, _process.run, PartitionKey(key))


def pool_line(
    settings: Settings,
    server: Server,
    raw: RawTable,
    transform: str,
    name: str,
    procs: int,
    reference: int = REFERENCE_ZIPS,
) -> Line:
    """The whole table through the script, its output checked like etl-worker's."""
    target = TableName(f"bench_pool_{transform.rsplit(':', 1)[1]}")
    fresh_target(server.url, raw.table, target, PARTITION_COLUMN)
    settings = settings.replace(database_url=server.url)
    biggest_first = sorted(raw.sizes, key=lambda k: -raw.sizes[k])
    ready = multiprocessing.get_context("fork").Barrier(procs)
    with process_pool(procs, _start, (settings, raw.table, target, transform, ready)) as pool:
        pool.map(_ready, range(procs), chunksize=1)  # every process connected and prepared
        with sampled(server) as sampler:
            written = sum(pool.imap_unordered(_zip, biggest_first, chunksize=1))
    exact, check = check_output(server, settings, raw, target, transform, written, reference)
    drop_tables(server.url, target)
    return Line(
        name,
        sampler.usage().wall_seconds,
        raw.rows,
        exact,
        f"multiprocessing.Pool({procs}), per zip biggest first: ADBC read, the transform, "
        "DELETE + ADBC COPY in one transaction; no queue, audit or lease; "
        f"exact: {check}",
        usage=sampler.usage(),
        extra={"rows_written": written, "tasks": len(biggest_first)},
    )
