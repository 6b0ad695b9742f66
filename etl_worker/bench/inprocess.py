"""One partition the way the worker reads, transforms and writes it, in this process and
without the fleet: no queue, no audit row, no lease, no advisory lock, no downcasting. The
Pool script runs it per zip in its processes; the exactness checks run it as the reference.
"""

from __future__ import annotations

from psycopg import sql

from etl_worker.audit import RunSpec
from etl_worker.bench.data import PARTITION_COLUMN
from etl_worker.config import Settings
from etl_worker.context import PreparedRun, WorkerContext
from etl_worker.db import TableName
from etl_worker.extract import predicate, read_arrow, select_sql
from etl_worker.frames import to_frame
from etl_worker.load import ingest, to_arrow
from etl_worker.partition import PartitionKey
from etl_worker.transactions import adbc_run

IDENTITY = "etl_worker.transforms:identity"
CLEAN = "etl_worker.transforms:clean_companies"


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
        adbc_run(cur, ctx.audit.bind(delete, params))  # one round trip, as the workers
        written = ingest(cur, run.target, data)
        ctx.adbc.commit()
    finally:
        cur.close()
    return written
