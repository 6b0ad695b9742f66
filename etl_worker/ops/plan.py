"""etl-plan: measure the raw table before a run and size the fleet for it.

1. Partition sizes: rows per partition (largest, p50, p99, total), counted by Postgres.
2. The largest few partitions go through the pipeline's own steps — read, transform,
   cast to the target (`pipeline.transform_partition`) — and a COPY into a
   temporary table that is rolled back. That measures their DataFrame memory, the peak
   memory of a process doing it (what one pool process needs), and rows per second. The
   median partition goes through the same steps: with thousands of small partitions, the
   fixed cost per partition matters as much as the rows.
3. A recommendation: pool processes per machine for a memory budget and CPU count, machines
   for a target wall time, and the worker settings that go with them.

Nothing is written: no audit rows, no target rows (the temporary table is rolled back).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from etl_worker import memory, pipeline
from etl_worker.audit import RunMode, RunSpec
from etl_worker.config import Settings
from etl_worker.context import PreparedRun, WorkerContext
from etl_worker.db import (
    Column,
    TableName,
    connect,
    create_partition_index,
    database_error,
    has_index_on,
)
from etl_worker.errors import EtlError, traceback_last_line
from etl_worker.load import ingest
from etl_worker.partition import PartitionKey
from etl_worker.producer import prepare
from etl_worker.splits import rows_per_partition
from etl_worker.units import format_bytes, format_duration

#: How many of the largest partitions are loaded and measured.
SAMPLES = 3
#: Room on top of the measured peak: partitions not sampled, allocator fragmentation.
HEADROOM = 1.25
#: Memory a machine keeps for itself: the OS, the worker's main process, the metrics sidecar.
MACHINE_RESERVE_BYTES = 1024**3
#: Postgres connections one pool process holds: control (psycopg), data (ADBC) and the
#: lease heartbeat's own (context.py, heartbeat.py).
CONNECTIONS_PER_PROCESS = 3

_SCRATCH_TABLE = "etl_plan_scratch"


@dataclass(frozen=True)
class PartitionSizes:
    """Rows per partition over the whole raw table."""

    partitions: int
    total_rows: int
    p50: int
    p99: int
    #: The largest partitions, largest first: (partition value, rows).
    largest: list[tuple[str | None, int]]
    #: The partition at the median: (partition value, rows).
    median: tuple[str | None, int] | None = None


@dataclass(frozen=True)
class Sample:
    """One partition put through the pipeline's steps."""

    key: str | None
    rows: int
    #: "largest" or "median"
    kind: str = "largest"
    #: The transform's output frame; `downcast_bytes` is the same since workers stopped
    #: downcasting it (frames.py), kept for the JSON's readers.
    frame_bytes: int = 0
    downcast_bytes: int = 0
    #: Peak resident memory of this process while it did the partition.
    peak_rss_bytes: int = 0
    #: Read + transform + write (into a scratch table), end to end.
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class Machine:
    """The worker machine to size for, and the wall time wanted."""

    memory_bytes: int
    cpus: int
    hours: float | None = None
    #: Memory the machine keeps for itself.
    reserve_bytes: int = MACHINE_RESERVE_BYTES


@dataclass(frozen=True)
class Sizing:
    """What one process needs and does (measured), and what follows for the machine."""

    machine: Machine
    #: Memory to allow one pool process: the measured peak plus HEADROOM.
    process_bytes: int
    #: Rows per second of one process on the largest partitions.
    rows_per_second: float
    #: Seconds each partition costs besides its rows (from the median partition).
    partition_overhead_seconds: float
    #: Seconds the whole table takes one process: its rows plus every partition's overhead.
    process_seconds: float

    @property
    def by_memory(self) -> int:
        return max(
            0, (self.machine.memory_bytes - self.machine.reserve_bytes) // self.process_bytes
        )

    @property
    def by_cpu(self) -> int:
        # CPU-bound pandas gains nothing from more processes than cores.
        return max(1, self.machine.cpus)

    @property
    def concurrency(self) -> int:
        return min(self.by_memory, self.by_cpu)

    @property
    def machine_hours(self) -> float:
        """Hours the whole table takes one machine at `concurrency`."""
        return self.process_seconds / self.concurrency / 3600 if self.concurrency else math.inf

    @property
    def machines(self) -> int | None:
        """Machines that finish within `machine.hours` (None: no target, or none fits)."""
        if not self.machine.hours or not self.concurrency:
            return None
        return max(1, math.ceil(self.machine_hours / self.machine.hours))

    @property
    def connections(self) -> int | None:
        if self.machines is None:
            return None
        return self.machines * self.concurrency * CONNECTIONS_PER_PROCESS

    def as_json(self) -> dict[str, Any]:
        derived = ("by_memory", "by_cpu", "concurrency", "machine_hours", "machines")
        return asdict(self) | {name: getattr(self, name) for name in (*derived, "connections")}


@dataclass
class Plan:
    raw_table: str
    partition_column: str
    transform: str
    indexed: bool
    index_created: bool
    sizes: PartitionSizes
    samples: list[Sample]
    sizing: Sizing | None
    max_connections: int
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"sizing": self.sizing and self.sizing.as_json()}


def nearest_rank(sorted_values: Sequence[int], percent: float) -> int:
    """The percentile by nearest rank: a value that occurs, never an interpolation."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def partition_sizes(
    conn: psycopg.Connection, raw: TableName, column: Column, top: int = SAMPLES
) -> PartitionSizes:
    counts = list(rows_per_partition(conn, raw, column).items())
    counts.sort(key=lambda kv: (-kv[1], kv[0] is None, kv[0] or ""))
    ascending = sorted(rows for _, rows in counts)
    p50 = nearest_rank(ascending, 50)
    return PartitionSizes(
        partitions=len(counts),
        total_rows=sum(ascending),
        p50=p50,
        p99=nearest_rank(ascending, 99),
        largest=counts[:top],
        median=next((kv for kv in reversed(counts) if kv[1] == p50), None),
    )


def measure_partition(
    ctx: WorkerContext, run: PreparedRun, key: str | None, rows: int, kind: str = "largest"
) -> Sample:
    """Put one partition through read -> transform -> cast -> COPY, rolled back."""
    memory.reset_peak()
    started = time.perf_counter()
    try:
        part = pipeline.transform_partition(ctx, run, PartitionKey(key))
        _copy_rolled_back(ctx, run, part.data)
    except Exception as exc:  # over the memory ceiling, the transform raised, ...
        error = exc if isinstance(exc, EtlError) else database_error(exc) or exc
        return Sample(key, rows, kind, error=str(error) or traceback_last_line(exc))
    return Sample(
        key,
        rows,
        kind,
        frame_bytes=part.memory_before_bytes,
        downcast_bytes=part.memory_after_bytes,
        peak_rss_bytes=memory.peak_rss(),
        seconds=time.perf_counter() - started,
    )


def _copy_rolled_back(ctx: WorkerContext, run: PreparedRun, data: pa.Table) -> None:
    """COPY into a temporary copy of the target's columns, then roll back: the write's cost
    without writing anything."""
    like = run.target_schema.table.ident
    cur = ctx.adbc.cursor()
    try:
        create = sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {})").format(
            sql.Identifier(_SCRATCH_TABLE), like
        )
        cur.execute(ctx.audit.bind(create, {}))
        # pg_temp names this session's temporary schema (ADBC would assume "public").
        ingest(cur, TableName(_SCRATCH_TABLE, "pg_temp"), data)
    finally:
        cur.close()
        ctx.adbc.rollback()


def recommend(sizes: PartitionSizes, samples: Sequence[Sample], machine: Machine) -> Sizing | None:
    """What one process needs and does, from the measured samples, for sizing `machine`
    (None when no sample could be measured)."""
    ok = [s for s in samples if s.error is None and s.seconds > 0]
    measured = [s for s in ok if s.kind == "largest"]
    if not measured:
        return None
    process_bytes = math.ceil(max(s.peak_rss_bytes for s in ok) * HEADROOM)
    rows_per_second = sum(s.rows for s in measured) / sum(s.seconds for s in measured)
    median = next((s for s in ok if s.kind == "median"), None)
    overhead = max(0.0, median.seconds - median.rows / rows_per_second) if median else 0.0
    process_seconds = sizes.partitions * overhead + sizes.total_rows / rows_per_second
    return Sizing(machine, process_bytes, rows_per_second, overhead, process_seconds)


def make_plan(
    settings: Settings, machine: Machine, *, samples: int = SAMPLES, create_index: bool = False
) -> Plan:
    """Measure the raw table named by `settings` and size a fleet for it."""
    raw = TableName.parse(settings.raw_table)
    with connect(settings.database_url) as conn:
        _, column, warnings = prepare(settings, conn)
        index_created = False
        if create_index:
            index_created = create_partition_index(conn, raw, column.name)
            warnings = [w for w in warnings if "has no index" not in w]
        indexed = has_index_on(conn, raw, column.name)
        sizes = partition_sizes(conn, raw, column, top=samples)
        row = conn.execute("SELECT current_setting('max_connections')::int").fetchone()
        max_connections = int(row[0]) if row else 0

    spec = RunSpec(
        "etl-plan",
        settings.raw_table,
        settings.target_table,
        settings.partition_column,
        settings.transform,
        RunMode.DRY_RUN,
    )
    ctx = WorkerContext(settings, worker_name="etl-plan")
    try:
        run = ctx.prepare_run(spec)
        measured = [measure_partition(ctx, run, key, rows) for key, rows in sizes.largest]
        if sizes.median is not None and sizes.median not in sizes.largest:
            # A small partition takes milliseconds, so one timing is mostly noise from
            # whatever else the machine does: keep the fastest of a few.
            tries = [measure_partition(ctx, run, *sizes.median, kind="median") for _ in range(3)]
            measured.append(min(tries, key=lambda t: (t.error is not None, t.seconds)))
    finally:
        ctx.close()

    sizing = recommend(sizes, measured, machine)
    warnings += [
        f"partition {PartitionKey(s.key).label} could not be measured: {s.error}"
        for s in measured
        if s.error
    ]
    if sizing is not None:
        warnings += sizing_warnings(sizing, max_connections)
    return Plan(
        raw_table=str(raw),
        partition_column=column.name,
        transform=settings.transform,
        indexed=indexed,
        index_created=index_created,
        sizes=sizes,
        samples=measured,
        sizing=sizing,
        max_connections=max_connections,
        warnings=warnings,
    )


def sizing_warnings(sizing: Sizing, max_connections: int) -> list[str]:
    warnings = []
    if sizing.concurrency == 0:
        warnings.append(
            f"one process needs {format_bytes(sizing.process_bytes)} for the largest partition;"
            f" a {format_bytes(sizing.machine.memory_bytes)} machine cannot run even one — use "
            "bigger machines or split big partitions"
        )
    connections = sizing.connections
    if connections and max_connections and connections > max_connections:
        warnings.append(
            f"{sizing.machines} machines x {sizing.concurrency} processes hold {connections} "
            f"Postgres connections ({CONNECTIONS_PER_PROCESS} each), over max_connections "
            f"{max_connections} — raise it, put PgBouncer in front, or accept a longer run"
        )
    return warnings


def format_plan(plan: Plan) -> str:
    """The human report `etl-plan` prints."""
    s = plan.sizes
    lines = [
        f"table      {plan.raw_table}: {s.total_rows:,} rows in {s.partitions:,} partitions "
        f"by {plan.partition_column}",
        f"rows/zip   largest {s.largest[0][1] if s.largest else 0:,}  p99 {s.p99:,}  "
        f"p50 {s.p50:,}  total {s.total_rows:,}",
        f"index      {plan.partition_column}: "
        + ("created (CONCURRENTLY)" if plan.index_created else "yes" if plan.indexed else "NONE"),
        f"transform  {plan.transform}, on the largest partitions and the median one",
        "           (read, transform, cast, COPY into a table that is rolled back):",
    ]
    for x in plan.samples:
        if x.error:
            lines.append(
                f"  {x.kind:>7} {PartitionKey(x.key).label:>9} {x.rows:>10,} rows  not measured"
            )
            continue
        lines.append(
            f"  {x.kind:>7} {PartitionKey(x.key).label:>9} {x.rows:>10,} rows  "
            f"frame {format_bytes(x.frame_bytes):>10}  "
            f"process peak {format_bytes(x.peak_rss_bytes):>10}  "
            f"{x.rows / x.seconds:>9,.0f} rows/s"
        )
    z = plan.sizing
    if z is not None:
        lines += [
            f"per process {format_bytes(z.process_bytes)} (peak x {HEADROOM}), "
            f"{z.rows_per_second:,.0f} rows/s + {z.partition_overhead_seconds * 1000:,.0f} ms "
            "per partition",
            f"machine    {format_bytes(z.machine.memory_bytes)}, {z.machine.cpus} CPUs: "
            f"concurrency {z.concurrency} (memory allows {z.by_memory}, CPUs {z.by_cpu})",
            f"one machine takes at least {format_duration(z.machine_hours * 3600)} for "
            f"{s.total_rows:,} rows in {s.partitions:,} partitions",
            "           (reads, transforms and writes only: each task's Celery and audit round "
            "trips come on top;",
            "           etl-enqueue --all-zips --dry-run --wait measures everything)",
        ]
        if z.machines is not None and z.machine.hours:
            lines.append(
                f"machines   {z.machines} for {z.machine.hours:g} h ({z.machines * z.concurrency} "
                f"processes, {z.connections} Postgres connections of {plan.max_connections})"
            )
        if z.concurrency:
            lines += [
                "workers    ETL_PROCESS_MEMORY="
                f"{_mib(z.process_bytes)} ETL_MAX_MEMORY_PER_CHILD={_mib(z.process_bytes)}",
                f"           celery -A etl_worker worker --autoscale={z.concurrency},1",
            ]
    lines += [f"warning    {w}" for w in plan.warnings]
    return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{math.ceil(n / 2**20)}MiB"
