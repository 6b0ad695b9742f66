"""Run every measurement in order on one table and collect what the report needs.

Self-contained: the benchmark works in its own database (`etl_bench` on the configured
server), its own audit schema, its own Redis key prefix and queue, and its own `celery
worker`; it drops its target tables, audit schema and Redis keys when done and keeps only the
generated raw tables (reused by the next run with the same sizes and seed).
"""

from __future__ import annotations

import os
import platform
import secrets
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import redis
from psycopg import sql

from etl_worker.bench import baselines, floors
from etl_worker.bench.data import RawTable, ensure_raw_table
from etl_worker.bench.dataframes import FrameMemory, measure_frames
from etl_worker.bench.fleet import (
    CLEAN,
    IDENTITY,
    enqueue_line,
    fixed_cost_line,
    fleet,
    memory_check,
    transform_line,
)
from etl_worker.bench.measure import Line, drop_tables
from etl_worker.bench.paths import PathResult, compare_paths
from etl_worker.config import Settings
from etl_worker.db import TableName, connect, with_database

RAW_TABLE = "bench_raw_companies"
ONEROW_TABLE = "bench_onerow"
ENQUEUE_TABLE = "bench_enqueue"
AUDIT_SCHEMA = "etl_bench"
#: The packages whose versions the report lists.
PACKAGES = (
    "etl-worker", "pandas", "pyarrow", "numpy", "adbc-driver-postgresql", "psycopg",
    "psycopg2-binary", "SQLAlchemy", "connectorx", "celery", "kombu", "redis",
)  # fmt: skip


@dataclass(frozen=True)
class BenchOptions:
    rows: int = 2_000_000
    zips: int = 200
    seed: int = 42
    procs: int = 2
    #: Share of the rows the seed-style and to_sql baselines run on (then extrapolated).
    subset: float = 0.05
    onerow_partitions: int = 5_000
    enqueue_partitions: int = 40_000
    database: str = "etl_bench"
    output: Path = Path("BENCHMARKS.md")
    chart: Path = Path("benchmarks.png")
    rebuild: bool = False
    keep: bool = False
    command: str = ""


@dataclass
class BenchResult:
    options: BenchOptions
    raw: RawTable
    lines: list[Line] = field(default_factory=list)
    fixed_cost: Line | None = None
    enqueue: Line | None = None
    frames: FrameMemory | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    paths: list[PathResult] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def line(self, name: str) -> Line | None:
        return next((line for line in self.lines if line.name == name), None)


def bench_settings(settings: Settings, options: BenchOptions) -> Settings:
    tag = secrets.token_hex(4)
    return settings.replace(
        database_url=with_database(settings.database_url, options.database),
        queue=f"etl-bench-{tag}",
        redis_key_prefix=f"etl-bench-{tag}:",
        audit_schema=AUDIT_SCHEMA,
        dry_run=False,
    )


def machine_facts(settings: Settings) -> dict[str, Any]:
    model = ""
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with connect(settings.database_url) as conn:
        row = conn.execute("SELECT version()").fetchone()
        settings_rows = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name IN "
            "('shared_buffers', 'synchronous_commit', 'max_wal_size', 'work_mem')"
        ).fetchall()
    client = redis.Redis.from_url(settings.broker_url)
    try:
        redis_version = str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()
    return {
        "cpu": model or platform.processor(),
        "cores": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgres": row[0] if row else "?",
        "postgres_settings": {name: f"{value}{unit or ''}" for name, value, unit in settings_rows},
        "redis": redis_version,
        "load_before": os.getloadavg(),
    }


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_bench(
    settings: Settings, options: BenchOptions, say: Callable[[str], None] = print
) -> BenchResult:
    """Every measurement, in an order where each line starts from a quiet database."""
    baselines.check_installed()
    settings = bench_settings(settings, options)
    url = settings.database_url
    say(f"raw table: {options.rows:,} rows over {options.zips:,} zips (seed {options.seed})")
    raw = ensure_raw_table(
        url, RAW_TABLE, rows=options.rows, zips=options.zips, seed=options.seed,
        rebuild=options.rebuild,
    )  # fmt: skip
    result = BenchResult(options, raw, machine=machine_facts(settings))
    result.versions = package_versions()
    procs = options.procs

    def measure(what: str, action: Callable[[], Line]) -> Line:
        say(f"measuring {what} ...")
        line = action()
        say(f"  {line.seconds:8.2f} s  {line.rows_per_second:12,.0f} rows/s  exact={line.exact}")
        return line

    try:
        for name in floors.FLOORS:
            result.lines.append(
                measure(name, lambda name=name: floors.floor(name, url, raw, procs))  # type: ignore[misc]
            )
        for index in (False, True):
            result.lines.append(
                measure(
                    f"seed-style baseline (index {'used' if index else 'ignored'})",
                    lambda index=index: baselines.seed_style(  # type: ignore[misc]
                        url, raw, procs, options.subset, index=index
                    ),
                )
            )
        result.lines.append(
            measure("to_sql baseline", lambda: baselines.to_sql(url, raw, procs, options.subset))
        )
        onerow = ensure_raw_table(
            url, ONEROW_TABLE, rows=options.onerow_partitions, zips=options.onerow_partitions,
            seed=options.seed, rebuild=options.rebuild,
        )  # fmt: skip
        log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"etl-bench-{os.getpid()}.log"
        say(f"starting a celery worker with {procs} processes (log: {log_path})")
        with fleet(settings, procs, log_path) as workers:
            # First, so the pool processes are warm (libraries loaded, connections open)
            # for the lines that follow; over thousands of partitions warming up is noise.
            result.fixed_cost = measure(
                "fixed cost per partition", lambda: fixed_cost_line(workers, onerow)
            )
            etl_lines = [
                measure(
                    "etl-worker, identity",
                    lambda: transform_line(workers, raw, IDENTITY, "etl-worker, identity", 8),
                ),
                measure(
                    "etl-worker, default transform",
                    lambda: transform_line(workers, raw, CLEAN, "etl-worker, clean_companies", 8),
                ),
            ]
            result.lines.extend(etl_lines)
            result.memory = memory_check(workers, result.fixed_cost, etl_lines)
        enqueue_table = ensure_raw_table(
            url, ENQUEUE_TABLE, rows=options.enqueue_partitions,
            zips=options.enqueue_partitions, seed=options.seed, rebuild=options.rebuild,
        )  # fmt: skip
        result.enqueue = measure("enqueue", lambda: enqueue_line(settings, enqueue_table))
        say("measuring DataFrame memory and downcasting ...")
        result.frames = measure_frames(settings, raw)
        say("comparing read and write paths ...")
        result.paths = compare_paths(url, raw)
    finally:
        result.machine["load_after"] = os.getloadavg()
        if not options.keep:
            cleanup(settings)
    return result


def cleanup(settings: Settings) -> None:
    """Drop what the benchmark wrote: targets and its audit schema (raw tables stay)."""
    url = settings.database_url
    with connect(url) as conn:
        targets = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename LIKE 'bench\\_%%' AND tablename NOT IN (%s, %s, %s)",
            (RAW_TABLE, ONEROW_TABLE, ENQUEUE_TABLE),
        ).fetchall()
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(AUDIT_SCHEMA))
        )
    drop_tables(url, *(TableName(t[0]) for t in targets))


def command_line() -> str:
    return shlex.join(["etl-bench", *sys.argv[1:]])
