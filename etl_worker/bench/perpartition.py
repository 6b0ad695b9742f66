"""What one partition costs the database, counted, not timed: round trips on the wire,
statements and Postgres execution time (pg_stat_statements) per partition, with
`pipeline.run_partition` called in this process, one partition after another (no Celery,
no second process: nothing but the partition's own work reaches Postgres).

Counts do not depend on how busy the machine is, so a change to the write or the audit
statements can be judged on a shared machine; the wall time per partition printed beside
them is only indicative there. Run it on the benchmark's own cluster:

    python -m etl_worker.bench.perpartition --partitions 300 --rows 80
    python -m etl_worker.bench.perpartition --partitions 40 --rows 10000

Each partition of the table is run twice: once into an empty target ("first write") and
once more into the rows the first run wrote ("rewrite": its DELETE has rows to remove).
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from psycopg import sql

from etl_worker.audit import Audit, RunSpec
from etl_worker.bench import statements
from etl_worker.bench.data import PARTITION_COLUMN, ensure_uniform_table
from etl_worker.bench.inprocess import CLEAN, IDENTITY
from etl_worker.bench.measure import Server, drop_tables, fresh_target
from etl_worker.bench.runner import BenchOptions, bench_server, cleanup
from etl_worker.bench.wire import RoundTripRelay
from etl_worker.config import Settings
from etl_worker.context import WorkerContext
from etl_worker.db import TableName, connect
from etl_worker.partition import PartitionKey
from etl_worker.pipeline import run_partition

TABLE = "bench_perpartition_{rows}"
TARGET = TableName("bench_etl_perpartition")
#: Partitions run before counting: connections opened, the run's tables and types learned.
WARM_UP = 5


@dataclass
class Counted:
    label: str
    partitions: int
    round_trips: int
    wall_seconds: float
    #: CPU seconds of this process (the worker's side): far less sensitive than the wall
    #: time to what else the machine runs.
    cpu_seconds: float
    stmts: statements.Statements | None = None
    #: Rows the audit table's UPDATEs changed, and how many of them were HOT (no index
    #: entry written): the claim and the finish change `state`, which is indexed.
    audit_updates: tuple[int, int] = (0, 0)
    #: CPU seconds of the cluster's processes (backends, WAL writer...): parse, plan and
    #: protocol included, which pg_stat_statements' execution time leaves out.
    postgres_cpu: float = 0.0
    by_kind: dict[str, tuple[float, float]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        n = max(1, self.partitions)
        out = [
            f"{self.label}: {self.partitions} partitions, "
            f"{self.round_trips / n:.2f} round trips/partition, "
            f"{self.cpu_seconds / n * 1000:.2f} ms worker CPU/partition, "
            f"{self.wall_seconds / n * 1000:.2f} ms wall/partition (indicative)"
        ]
        out.append(f"  {self.postgres_cpu / n * 1000:.2f} ms Postgres CPU/partition")
        updates, hot = self.audit_updates
        out.append(
            f"  audit partitions table: {updates / n:.2f} row updates/partition, "
            f"{hot / n:.2f} of them HOT"
        )
        if self.stmts is not None:
            out.append(
                f"  {self.stmts.calls / n:.2f} statements/partition, "
                f"{self.stmts.exec_ms / n:.3f} ms Postgres execution/partition"
            )
            for kind in self.stmts.kinds:
                out.append(
                    f"    {kind.calls / n:6.2f} x  {kind.exec_ms / n:8.3f} ms  "
                    f"{kind.wal_bytes / n:9.0f} WAL B  {kind.kind}"
                )
        return out


def _new_run(settings: Settings, raw: TableName, keys: list[str], transform: str) -> Any:
    with connect(settings.database_url) as conn:
        audit = Audit(conn, settings.audit_schema)
        audit.ensure_schema()
        run_id = f"perpartition-{uuid.uuid4().hex[:8]}"
        audit.create_run(RunSpec(run_id, str(raw), str(TARGET), PARTITION_COLUMN, transform))
        return run_id, audit.add_partitions(run_id, keys)


def _run(
    ctx: WorkerContext, settings: Settings, raw: TableName, keys: list[str], transform: str
) -> None:
    run_id, parts = _new_run(settings, raw, keys, transform)
    for part in parts:
        outcome = run_partition(
            ctx, run_id, part.part_id, PartitionKey(part.key), part.task_id, renews_lease=False
        )
        if outcome.status != "finished":
            raise SystemExit(f"partition {part.key}: {outcome.status} {outcome.detail}")


def count(
    settings: Settings,
    server: Server,
    raw: TableName,
    keys: list[str],
    transform: str,
    label: str,
    relay: RoundTripRelay,
    ctx: WorkerContext,
) -> Counted:
    with connect(server.url) as monitor:
        if server.classifier is not None:
            statements.reset(monitor)
        updates = _audit_updates(monitor, settings.audit_schema)
        pg_cpu = _cpu(server)
        before = relay.round_trips
        started, cpu = time.perf_counter(), time.process_time()
        _run(ctx, settings, raw, keys, transform)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        trips = relay.round_trips - before
        pg_cpu = _cpu(server) - pg_cpu
        stmts = (
            statements.collect(monitor, server.classifier)
            if server.classifier is not None
            else None
        )
        # A backend sends its table statistics when it ends (or seconds after it idles).
        ctx.reset_connections()
        time.sleep(0.5)
        after = _audit_updates(monitor, settings.audit_schema)
    changed = (after[0] - updates[0], after[1] - updates[1])
    return Counted(label, len(keys), trips, wall, cpu, stmts, changed, pg_cpu)


def _cpu(server: Server) -> float:
    total = 0.0
    for pid in server.processes() if server.processes is not None else ():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _audit_updates(conn: Any, schema: str) -> tuple[int, int]:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
        "WHERE schemaname = %s AND relname = 'partitions'",
        (schema,),
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def measure(
    settings: Settings,
    server: Server,
    partitions: int,
    rows: int,
    transform: str,
    seed: int,
    log_statements: bool = False,
    target_index: bool = True,
) -> list[Counted]:
    table = ensure_uniform_table(
        server.url, TABLE.format(rows=rows), partitions=partitions + WARM_UP,
        rows_per_partition=rows, seed=seed,
    )  # fmt: skip
    keys = sorted(k for k in table.sizes if k)
    fresh_target(server.url, table.table, TARGET, PARTITION_COLUMN)
    if not target_index:  # what each DELETE costs a target without one
        with connect(server.url) as conn:
            conn.execute(
                sql.SQL("DROP INDEX {}").format(sql.Identifier(f"{TARGET.name}_zip_code_idx"))
            )
    cluster = urlsplit(server.url)
    results = []
    with RoundTripRelay(cluster.hostname or "127.0.0.1", cluster.port or 5432) as relay:
        url = relay.url(cluster.path.lstrip("/"))
        if log_statements:  # every statement of the workers' connections in postgres.log
            url += "?options=-c%20log_statement%3Dall"
        relayed = settings.replace(database_url=url)
        ctx = WorkerContext(relayed)
        try:
            _run(ctx, relayed, table.table, keys[:WARM_UP], transform)
            counted = keys[WARM_UP:]
            results.append(
                count(relayed, server, table.table, counted, transform, "first write", relay, ctx)
            )
            _run(ctx, relayed, table.table, keys[:WARM_UP], transform)  # connect again
            results.append(
                count(relayed, server, table.table, counted, transform, "rewrite", relay, ctx)
            )
        finally:
            ctx.close()
    drop_tables(server.url, TARGET)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=300)
    parser.add_argument("--rows", type=int, default=80, help="rows per partition")
    parser.add_argument("--transform", choices=("identity", "clean"), default="identity")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--log-statements",
        action="store_true",
        help="log every statement of the partitions in the cluster's postgres.log",
    )
    parser.add_argument(
        "--no-target-index",
        action="store_true",
        help="drop the target's partition index first (what an un-indexed target costs)",
    )
    parser.add_argument("--cluster-dir", type=Path, default=BenchOptions.cluster_dir)
    args = parser.parse_args()
    options = BenchOptions(cluster_dir=args.cluster_dir)
    transform = IDENTITY if args.transform == "identity" else CLEAN
    with bench_server(Settings.load(), options) as (settings, server):
        try:
            for result in measure(
                settings, server, args.partitions, args.rows, transform, args.seed,
                args.log_statements, not args.no_target_index,
            ):  # fmt: skip
                print("\n".join(result.lines()))
        finally:
            cleanup(settings)


if __name__ == "__main__":
    main()
