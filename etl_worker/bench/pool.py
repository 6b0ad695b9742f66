"""The queue-less script: what a careful engineer writes by hand with `multiprocessing.Pool`
and etl-worker's own read, transform and write paths, and nothing else.

Per zip, biggest first, in `procs` processes: read the partition with ADBC (binary COPY
into Arrow, `extract.read_arrow`), hand it to the transform as the worker does
(`frames.to_frame`), cast the output to the target's types (`load.to_arrow`), then DELETE
the zip's old rows and COPY the new ones (`load.ingest`) in one transaction. The run is
resolved with the worker's own `WorkerContext.prepare_run`. No queue, no audit rows, no
lease, no advisory lock, no downcasting: the gap between this line and etl-worker's is the
price of the fleet machinery.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from threading import Barrier

from psycopg import sql

from etl_worker.audit import RunSpec
from etl_worker.bench.data import PARTITION_COLUMN, RawTable
from etl_worker.bench.measure import (
    Line,
    Server,
    difference,
    drop_tables,
    fresh_target,
    process_pool,
    sampled,
    tables_match,
)
from etl_worker.config import Settings
from etl_worker.context import PreparedRun, WorkerContext
from etl_worker.db import TableName, connect
from etl_worker.extract import predicate, read_arrow, select_sql
from etl_worker.frames import to_frame
from etl_worker.load import ingest, to_arrow
from etl_worker.partition import PartitionKey


def prepare(
    settings: Settings, raw: TableName, target: TableName, transform: str
) -> tuple[WorkerContext, PreparedRun]:
    """A context and the resolved run, as a worker process holds them."""
    ctx = WorkerContext(settings)
    spec = RunSpec("bench-pool", str(raw), str(target), PARTITION_COLUMN, transform)
    return ctx, ctx.prepare_run(spec)


def copy_partition(ctx: WorkerContext, run: PreparedRun, key: PartitionKey) -> int:
    """Read, transform and replace one partition in one transaction. Returns rows written."""
    where, params = predicate(key, run.partition_column)
    query = ctx.audit.bind(select_sql(run.raw, where), params)
    frame = to_frame(read_arrow(ctx.adbc, query, run.raw_columns))
    data = to_arrow(run.transform(frame), run.target_schema)
    cur = ctx.adbc.cursor()
    try:
        delete = sql.SQL("DELETE FROM {} WHERE {}").format(run.target.ident, where)
        cur.execute(ctx.audit.bind(delete, params))
        written = ingest(cur, run.target, data)
        ctx.adbc.commit()
    finally:
        cur.close()
    return written


@dataclass
class _Process:
    """What one pool process keeps between zips (made once, in the pool's initializer)."""

    ctx: WorkerContext
    run: PreparedRun
    ready: Barrier


_process: _Process | None = None

IDENTITY = "etl_worker.transforms:identity"
CLEAN = "etl_worker.transforms:clean_companies"
#: Zips a transform other than identity is checked on (the biggest, then spread by size).
REFERENCE_ZIPS = 8


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


def reference_zips(raw: RawTable, count: int) -> list[str]:
    """The biggest zip and then zips spread over the size range."""
    keys = sorted((k for k in raw.sizes if k), key=lambda k: -raw.sizes[k])
    step = max(1, len(keys) // max(1, count))
    return list(dict.fromkeys([keys[0], *keys[::step]]))[:count]


def reference_matches(
    server: Server,
    settings: Settings,
    raw: RawTable,
    target: TableName,
    transform: str,
    count: int,
) -> bool:
    """The transform applied in this process, one zip at a time and without downcasting,
    to a few zips, written to a scratch table: `target`'s rows for those zips must be the
    same multiset."""
    zips = reference_zips(raw, count)
    scratch = TableName("bench_reference")
    fresh_target(server.url, raw.table, scratch, PARTITION_COLUMN)
    ctx, run = prepare(settings.replace(database_url=server.url), raw.table, scratch, transform)
    try:
        for zip_code in zips:
            copy_partition(ctx, run, PartitionKey(zip_code))
    finally:
        ctx.close()
    chosen = sql.SQL("(SELECT * FROM {} WHERE {} = ANY({})) s").format(
        target.ident, sql.Identifier(PARTITION_COLUMN), sql.Literal(zips)
    )
    with connect(server.url) as conn:
        matched = difference(conn, chosen, scratch.ident) == (0, 0)
    drop_tables(server.url, scratch)
    return matched


def check_output(
    server: Server,
    settings: Settings,
    raw: RawTable,
    target: TableName,
    transform: str,
    rows_written: int,
    reference: int,
) -> tuple[bool, str]:
    """Whether a line's output is exact, and how that was checked: identity against the
    raw table (EXCEPT ALL both ways), another transform by the rows written and a few zips
    against the transform applied in-process."""
    if transform == IDENTITY:
        return tables_match(server.url, raw.table, target), "target EXCEPT ALL raw, both ways"
    exact = rows_written == raw.rows and reference_matches(
        server, settings, raw, target, transform, reference
    )
    return exact, f"{reference} zips against the transform applied in-process"


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
        "DELETE + ADBC COPY in one transaction; no queue, audit, lease or downcasting; "
        f"exact: {check}",
        usage=sampler.usage(),
        extra={"rows_written": written, "tasks": len(biggest_first)},
    )
