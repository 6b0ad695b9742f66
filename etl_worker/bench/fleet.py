"""etl-worker itself, end to end: real `celery worker` processes on the benchmark's own Redis
key prefix and queue, timed from the start of enqueueing to the last audit row's
`finished_at`. Also the fixed cost per partition (thousands of one-row partitions) and the
time to enqueue 40,000 tasks, and the workers' peak memory from the audit table."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis
from psycopg import sql

from etl_worker import producer
from etl_worker.bench.data import PARTITION_COLUMN, RawTable
from etl_worker.bench.measure import (
    Line,
    difference,
    drop_tables,
    fresh_target,
    sampled,
    tables_match,
)
from etl_worker.config import Settings
from etl_worker.context import WorkerContext
from etl_worker.db import TableName, connect
from etl_worker.devtools.demo import local_workers, settings_env
from etl_worker.errors import EtlError
from etl_worker.extract import predicate, read_arrow, select_sql
from etl_worker.frames import to_frame
from etl_worker.load import ingest, to_arrow
from etl_worker.partition import PartitionKey
from etl_worker.reporting.progress import wait_for_run

IDENTITY = "etl_worker.transforms:identity"
CLEAN = "etl_worker.transforms:clean_companies"
#: How long a benchmark run may take before the benchmark gives up on it.
RUN_TIMEOUT = 3600.0


@dataclass
class Fleet:
    """Running workers: their settings and their pool processes' idle memory."""

    settings: Settings
    pool_pids: list[int]
    idle_rss: int
    main_pid: int

    @property
    def pids(self) -> list[int]:
        """The worker's main process (it talks to Redis) and its pool processes."""
        return [self.main_pid, *self.pool_pids]


def delete_redis_prefix(broker_url: str, prefix: str) -> None:
    """Remove every Redis key under `prefix` (queues, unacked sets, bindings)."""
    client = redis.Redis.from_url(broker_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def _wait_ready(worker: subprocess.Popen[bytes], log_path: Path, procs: int) -> list[int]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise EtlError(f"the benchmark's celery worker exited — see {log_path}")
        children = psutil.Process(worker.pid).children()
        if " ready." in log_path.read_text(errors="replace") and len(children) >= procs:
            return [c.pid for c in children]
        time.sleep(0.2)
    raise EtlError(f"the benchmark's celery worker did not start in 120 s — see {log_path}")


@contextmanager
def fleet(settings: Settings, procs: int, log_path: Path) -> Iterator[Fleet]:
    """One `celery worker -c procs` on the settings' queue, ready before this yields."""
    log_path.unlink(missing_ok=True)
    try:
        with local_workers(settings, procs, log_path) as worker:
            pids = _wait_ready(worker, log_path, procs)
            idle = min(psutil.Process(p).memory_info().rss for p in pids)
            yield Fleet(settings, pids, idle, worker.pid)
    finally:
        delete_redis_prefix(settings.broker_url, settings.redis_key_prefix)


def run_through_fleet(
    workers: Fleet, raw: TableName, target: TableName, transform: str
) -> tuple[float, Any, dict[str, Any]]:
    """Enqueue every partition of `raw` and wait for the last one. Returns the seconds from
    the start of enqueueing to the last `finished_at`, the sampler's usage, and the run's
    status as JSON."""
    settings = workers.settings.replace(
        raw_table=str(raw), target_table=str(target), transform=transform
    )
    fresh_target(settings.database_url, raw, target, PARTITION_COLUMN)
    with sampled(settings.database_url, workers.pids) as sampler:
        started = time.time()
        result = producer.enqueue_run(settings)
        status = wait_for_run(
            settings, result.run_id, poll_seconds=0.2, timeout=RUN_TIMEOUT, show=False
        )
    with connect(settings.database_url) as conn:
        row = conn.execute(
            sql.SQL("SELECT max(finished_at) FROM {}.partitions WHERE run_id = %s").format(
                sql.Identifier(settings.audit_schema)
            ),
            (result.run_id,),
        ).fetchone()
    finished = row[0].timestamp() if row and row[0] else time.time()
    report = status.as_json()
    report["enqueue_seconds"] = result.seconds
    if status.failed:
        raise EtlError(
            f"benchmark run {result.run_id} ({transform}): {status.failed} partitions failed, "
            f"e.g. {status.failures[0]['error']}"
        )
    return finished - started, sampler.usage(), report


def transform_line(
    workers: Fleet, raw: RawTable, transform: str, name: str, reference_zips: int
) -> Line:
    """One etl-worker line: the whole table through the fleet with `transform`."""
    target = TableName(f"bench_etl_{transform.rsplit(':', 1)[1]}")
    seconds, usage, report = run_through_fleet(workers, raw.table, target, transform)
    url = workers.settings.database_url
    if transform == IDENTITY:
        exact = tables_match(url, raw.table, target)
        check = "target EXCEPT ALL raw, both ways"
    else:
        exact = report["rows_written"] == raw.rows and reference_matches(
            workers.settings, raw, target, report["run_id"], reference_zips
        )
        check = f"{reference_zips} zips against the transform applied in-process"
    return Line(
        name,
        seconds,
        raw.rows,
        exact,
        f"{report['total']:,} tasks through Celery + Redis, enqueue to last audit row; "
        f"exact: {check}",
        usage=usage,
        extra={"status": report},
    )


def reference_zips(raw: RawTable, count: int) -> list[str]:
    """The biggest zip and then zips spread over the size range."""
    keys = sorted((k for k in raw.sizes if k), key=lambda k: -raw.sizes[k])
    step = max(1, len(keys) // max(1, count))
    return list(dict.fromkeys([keys[0], *keys[::step]]))[:count]


def reference_matches(
    settings: Settings, raw: RawTable, target: TableName, run_id: str, count: int
) -> bool:
    """The transform applied in this process, without downcasting, to a few zips, written
    to a scratch table: the fleet's output for those zips must be the same multiset."""
    url = settings.database_url
    zips = reference_zips(raw, count)
    scratch = TableName("bench_reference")
    fresh_target(url, raw.table, scratch, PARTITION_COLUMN)
    ctx = WorkerContext(settings)
    try:
        run = ctx.prepared(run_id)  # the run's own tables and transform
        cur = ctx.adbc.cursor()
        for zip_code in zips:
            where, params = predicate(PartitionKey(zip_code), run.partition_column)
            query = ctx.audit.bind(select_sql(run.raw, where), params)
            table = read_arrow(ctx.adbc, query, run.raw_columns)
            ingest(cur, scratch, to_arrow(run.transform(to_frame(table)), run.target_schema))
            ctx.adbc.commit()  # before the next read, which ends its transaction
        cur.close()
    finally:
        ctx.close()
    chosen = sql.SQL("(SELECT * FROM {} WHERE {} = ANY({})) s").format(
        target.ident, sql.Identifier(PARTITION_COLUMN), sql.Literal(zips)
    )
    with connect(url) as conn:
        matched = difference(conn, chosen, scratch.ident) == (0, 0)
    drop_tables(url, scratch)
    return matched


def fixed_cost_line(workers: Fleet, onerow: RawTable) -> Line:
    """Thousands of one-row partitions: what a partition costs besides its data."""
    target = TableName("bench_etl_onerow")
    seconds, usage, report = run_through_fleet(workers, onerow.table, target, IDENTITY)
    exact = tables_match(workers.settings.database_url, onerow.table, target)
    procs = len(workers.pool_pids)
    per_partition = seconds / max(1, report["total"])
    return Line(
        "fixed cost per partition",
        seconds,
        onerow.rows,
        exact,
        f"{report['total']:,} one-row partitions, identity: {per_partition * 1000:.2f} ms "
        f"wall per partition with {procs} processes = {per_partition * procs * 1000:.2f} ms "
        "of one process's time",
        usage=usage,
        extra={
            "status": report,
            "partitions": report["total"],
            "ms_per_partition": per_partition * 1000,
            "ms_per_partition_per_process": per_partition * procs * 1000,
        },
    )


def enqueue_line(settings: Settings, table: RawTable) -> Line:
    """`etl-enqueue --all-zips` over tens of thousands of partitions, as a user runs it
    (a new process: imports, checks, listing, audit inserts, publishing), with no worker
    consuming; the queue is deleted after."""
    tag = f"{settings.redis_key_prefix}enqueue:"
    quiet = settings.replace(redis_key_prefix=tag, queue=settings.queue + "-enqueue")
    env = settings_env(quiet) | {"ETL_SPLIT_ROWS": "0"}
    command = [
        str(Path(sys.executable).with_name("etl-enqueue")),
        "--all-zips",
        "--raw-table",
        str(table.table),
        "--target-table",
        "bench_enqueue_target",
        "--transform",
        IDENTITY,
    ]
    try:
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    finally:
        delete_redis_prefix(settings.broker_url, tag)
        drop_tables(settings.database_url, TableName("bench_enqueue_target"))
    if done.returncode != 0:
        raise EtlError(f"etl-enqueue failed in the benchmark: {done.stderr.strip()[-500:]}")
    # "enqueued 40,002 partitions in 3.12s (...)": the publishing part alone.
    publish = float(done.stderr.split(" partitions in ", 1)[1].split("s", 1)[0])
    return Line(
        "enqueue",
        seconds,
        table.rows,
        None,
        f"etl-enqueue --all-zips, {table.rows:,} partitions, as a new process; "
        f"publishing alone {publish:.2f} s",
        extra={"partitions": len(table.sizes), "publish_seconds": publish},
    )


def memory_check(workers: Fleet, warm_up: Line, lines: list[Line]) -> dict[str, Any]:
    """Peak RSS of a pool process against the largest partition's DataFrame, per line.
    The baseline is a warm process: the highest per-partition peak of the one-row
    partitions (libraries loaded, connections open, allocator pools primed, no data)."""
    baseline = int(warm_up.extra["status"]["peak_rss_bytes"] or workers.idle_rss)
    per_line = {}
    for line in lines:
        peak = int(line.extra["status"]["peak_rss_bytes"] or 0)
        largest = int(line.extra["status"]["largest_frame_bytes"] or 0)
        per_line[line.name] = {
            "peak_rss_bytes": peak,
            "largest_frame_bytes": largest,
            "ratio": (peak - baseline) / largest if largest else 0.0,
            "within_target": peak <= 3 * largest + baseline,
        }
    return {"idle_rss_bytes": workers.idle_rss, "baseline_rss_bytes": baseline, "lines": per_line}
