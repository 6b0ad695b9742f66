"""etl-worker itself, end to end: real `celery worker` processes on the benchmark's own Redis
key prefix and queue, timed from the start of enqueueing to the last audit row's
`finished_at`. Also the fixed cost per partition (thousands of one-row partitions) and the
time to enqueue 40,000 tasks, and the workers' peak memory from the audit table."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import redis
from psycopg import sql

from etl_worker import producer
from etl_worker.bench.data import PARTITION_COLUMN, RawTable
from etl_worker.bench.exact import check_output
from etl_worker.bench.inprocess import IDENTITY
from etl_worker.bench.measure import (
    Line,
    Server,
    drop_tables,
    fresh_target,
    sampled,
    tables_match,
)
from etl_worker.bench.wire import RoundTripRelay
from etl_worker.config import Settings
from etl_worker.db import TableName, connect
from etl_worker.devtools.demo import local_workers, settings_env
from etl_worker.errors import EtlError
from etl_worker.reporting.progress import wait_for_run

#: How long a benchmark run may take before the benchmark gives up on it.
RUN_TIMEOUT = 3600.0


@dataclass
class Fleet:
    """Running workers: their settings and their pool processes' idle memory."""

    settings: Settings
    server: Server
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
def fleet(
    settings: Settings, server: Server, procs: int, log_path: Path, worker_url: str = ""
) -> Iterator[Fleet]:
    """One `celery worker -c procs` on the settings' queue, ready before this yields. The
    workers reach Postgres at `worker_url` when given (a relay), the benchmark directly."""
    log_path.unlink(missing_ok=True)
    worker_settings = settings.replace(database_url=worker_url) if worker_url else settings
    try:
        with local_workers(worker_settings, procs, log_path) as worker:
            pids = _wait_ready(worker, log_path, procs)
            idle = min(psutil.Process(p).memory_info().rss for p in pids)
            yield Fleet(settings, server, pids, idle, worker.pid)
    finally:
        delete_redis_prefix(settings.broker_url, settings.redis_key_prefix)


def run_through_fleet(
    workers: Fleet,
    raw: TableName,
    target: TableName,
    transform: str,
    zips: Sequence[str | None] | None = None,
) -> tuple[float, Any, dict[str, Any]]:
    """Enqueue every partition of `raw` (or `zips`) and wait for the last one. Returns the
    seconds from the start of enqueueing to the last `finished_at`, the sampler's usage,
    and the run's status as JSON."""
    settings = workers.settings.replace(
        raw_table=str(raw), target_table=str(target), transform=transform
    )
    fresh_target(settings.database_url, raw, target, PARTITION_COLUMN)
    with sampled(workers.server, workers.pids) as sampler:
        started = time.time()
        result = producer.enqueue_run(settings, zips=zips)
        # The finish time comes from the audit rows: polling slower costs no precision,
        # and puts less of the benchmark's own load on the Postgres being measured.
        status = wait_for_run(
            settings, result.run_id, poll_seconds=0.5, timeout=RUN_TIMEOUT, show=False
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
    workers: Fleet, raw: RawTable, transform: str, name: str, reference: int
) -> Line:
    """One etl-worker line: the whole table through the fleet with `transform`."""
    target = TableName(f"bench_etl_{transform.rsplit(':', 1)[1]}")
    seconds, usage, report = run_through_fleet(workers, raw.table, target, transform)
    exact, check = check_output(
        workers.server,
        workers.settings,
        raw,
        target,
        transform,
        report["rows_written"],
        reference,
    )
    drop_tables(workers.server.url, target)
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


def small_partitions_line(workers: Fleet, small: RawTable) -> Line:
    """Thousands of small partitions (tens of rows, every column of the demo table): what
    the per-partition round trips and bookkeeping cost when there is little data to move."""
    target = TableName("bench_etl_small")
    seconds, usage, report = run_through_fleet(workers, small.table, target, IDENTITY)
    exact = tables_match(workers.server.url, small.table, target)
    drop_tables(workers.server.url, target)
    partitions = int(report["total"])
    rate = partitions / seconds if seconds else 0.0
    mean = small.rows / max(1, len(small.sizes))
    return Line(
        "small partitions",
        seconds,
        small.rows,
        exact,
        f"{partitions:,} partitions of {mean:,.0f} rows, identity: {rate:,.1f} partitions/s "
        f"with {len(workers.pool_pids)} processes",
        usage=usage,
        extra={"status": report, "partitions": partitions, "partitions_per_second": rate},
    )


def count_round_trips(
    settings: Settings,
    server: Server,
    procs: int,
    small: RawTable,
    log_path: Path,
    partitions: int = 200,
    warm_up: int = 20,
) -> dict[str, Any]:
    """Round trips per partition between the workers and Postgres, counted on the wire
    (wire.py) over `partitions` partitions of the small table, after a warm-up run that
    opens the connections. The count includes the per-run set-up (a new run's tables and
    types, once per process), spread over the partitions."""
    keys = sorted(k for k in small.sizes if k)
    cluster = urlsplit(server.url)
    target = TableName("bench_etl_roundtrips")
    with RoundTripRelay(cluster.hostname or "127.0.0.1", cluster.port or 5432) as relay:
        url = relay.url(cluster.path.lstrip("/"))
        with fleet(settings, server, procs, log_path, worker_url=url) as workers:
            run_through_fleet(workers, small.table, target, IDENTITY, keys[:warm_up])
            before = relay.round_trips
            _, _, report = run_through_fleet(
                workers, small.table, target, IDENTITY, keys[warm_up : warm_up + partitions]
            )
            counted = relay.round_trips - before
    drop_tables(server.url, target)
    done = int(report["total"])
    return {
        "partitions": done,
        "round_trips": counted,
        "per_partition": counted / done if done else 0.0,
    }


def status_seconds(settings: Settings, run_id: str) -> float:
    """`etl-status RUN_ID` as a user runs it (a new process), timed."""
    command = [str(Path(sys.executable).with_name("etl-status")), run_id]
    started = time.perf_counter()
    done = subprocess.run(
        command, env=settings_env(settings), capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise EtlError(f"etl-status failed in the benchmark: {done.stderr.strip()[-500:]}")
    return seconds


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
        if done.returncode != 0:
            raise EtlError(f"etl-enqueue failed in the benchmark: {done.stderr.strip()[-500:]}")
        status = status_seconds(quiet, done.stdout.strip().splitlines()[0])
    finally:
        delete_redis_prefix(settings.broker_url, tag)
        drop_tables(settings.database_url, TableName("bench_enqueue_target"))
    # "enqueued 40,002 partitions in 3.12s (...)": the publishing part alone.
    publish = float(done.stderr.split(" partitions in ", 1)[1].split("s", 1)[0])
    return Line(
        "enqueue",
        seconds,
        table.rows,
        None,
        f"etl-enqueue --all-zips, {len(table.sizes):,} partitions of {table.rows:,} rows "
        f"(listing included), as a new process; publishing alone {publish:.2f} s; "
        f"etl-status on the run ({len(table.sizes):,} queued partitions) {status:.2f} s",
        extra={
            "partitions": len(table.sizes),
            "publish_seconds": publish,
            "status_seconds": status,
        },
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
