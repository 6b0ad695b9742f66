"""Run every measurement in order on one table and collect what the report needs.

Self-contained: the benchmark works on a Postgres cluster of its own (cluster.py; or, with
--shared-postgres, in the `etl_bench` database of the configured server), its own audit
schema, its own Redis key prefix and queue, and its own `celery worker`; it drops each
target table once checked, and its audit schema and Redis keys when done, and keeps only the
generated raw tables (reused by the next run with the same sizes and seed).
"""

from __future__ import annotations

import os
import platform
import secrets
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import redis
from psycopg import sql

from etl_worker.bench import baselines, floors, statements
from etl_worker.bench.cluster import own_cluster
from etl_worker.bench.data import RawTable, ensure_raw_table, ensure_uniform_table
from etl_worker.bench.dataframes import FrameMemory, measure_frames
from etl_worker.bench.exact import REFERENCE_ZIPS
from etl_worker.bench.fleet import (
    Fleet,
    count_round_trips,
    enqueue_line,
    fixed_cost_line,
    fleet,
    memory_check,
    small_partitions_line,
    transform_line,
)
from etl_worker.bench.inprocess import CLEAN, IDENTITY
from etl_worker.bench.measure import Line, Server, drop_tables
from etl_worker.bench.paths import PathResult, compare_paths
from etl_worker.bench.pool import pool_line
from etl_worker.bench.profile import Profile, profile_partitions
from etl_worker.bench.scaling import PARTITION_ROWS, run_series
from etl_worker.config import Settings, redact_url
from etl_worker.db import TableName, connect, ensure_database, with_database

RAW_TABLE = "bench_raw_companies"
ONEROW_TABLE = "bench_onerow"
ENQUEUE_TABLE = "bench_enqueue"
SMALL_TABLE = "bench_small"
#: Line names the report and the targets look lines up by.
POOL_IDENTITY = "Pool script, identity"
POOL_CLEAN = "Pool script, clean_companies"
ETL_IDENTITY = "etl-worker, identity"
ETL_CLEAN = "etl-worker, clean_companies"
AUDIT_SCHEMA = "etl_bench"
#: The packages whose versions the report lists.
PACKAGES = (
    "etl-worker", "pandas", "pyarrow", "numpy", "adbc-driver-postgresql", "psycopg",
    "psycopg2-binary", "SQLAlchemy", "connectorx", "celery", "kombu", "redis",
)  # fmt: skip


#: The parts of the benchmark, in the order they run; `--only` picks some.
PARTS = (
    "floors",  # SQL floor and COPY pipe floor
    "seed-style",  # the blog's script, both plans: time to fail
    "to-sql",
    "pool",  # the queue-less Pool script, identity and clean_companies
    "etl-worker",  # fixed cost, identity, clean_companies, worker memory
    "small-partitions",  # ~4,000 partitions of ~80 rows, and round trips per partition
    "enqueue",  # etl-enqueue of 40,000 zips, etl-status on that run
    "frames",
    "paths",
    "profile",  # one 10,000-row partition through a worker, sampled by py-spy
)


@dataclass(frozen=True)
class BenchOptions:
    rows: int = 1_000_000
    zips: int = 100
    seed: int = 42
    procs: int = 2
    #: Share of the zips the to_sql baseline runs on (1.0: all, else extrapolated).
    to_sql_share: float = 1.0
    onerow_partitions: int = 5_000
    enqueue_partitions: int = 40_000
    small_partitions: int = 4_000
    small_rows: int = 80
    #: Partitions of the small table run through the round-trip counting relay.
    round_trip_partitions: int = 200
    #: 10,000-row partitions the profile samples (more partitions, more samples).
    profile_partitions: int = 40
    only: tuple[str, ...] = ()
    #: Table sizes of the scaling series (scaling.py); when given, only the series runs.
    scale: tuple[int, ...] = ()
    scale_partition_rows: int = PARTITION_ROWS
    scaling_results: Path = Path(".etl-bench/scaling.json")
    scaling_chart: Path = Path("docs/scaling.png")
    #: Run Postgres from a cluster of the benchmark's own (cluster.py); else the server
    #: at ETL_DATABASE_URL.
    own_postgres: bool = True
    cluster_dir: Path = Path(".etl-bench/postgres")
    database: str = "etl_bench"
    output: Path = Path("BENCHMARKS.md")
    chart: Path = Path("benchmarks.png")
    profile_output: Path = Path(".etl-bench/profile")
    rebuild: bool = False
    keep: bool = False
    command: str = ""

    def runs(self, part: str) -> bool:
        return not self.only or part in self.only


@dataclass
class BenchResult:
    options: BenchOptions
    raw: RawTable
    lines: list[Line] = field(default_factory=list)
    fixed_cost: Line | None = None
    enqueue: Line | None = None
    small: Line | None = None
    round_trips: dict[str, Any] = field(default_factory=dict)
    frames: FrameMemory | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    paths: list[PathResult] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    #: The scaling series recorded so far (scaling.py), for goal 5 and its section.
    scaling: dict[str, Any] = field(default_factory=dict)
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


def machine_facts(settings: Settings, server: Server) -> dict[str, Any]:
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
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
            "('shared_buffers', 'synchronous_commit', 'fsync', 'max_wal_size', 'work_mem', "
            "'shared_preload_libraries')"
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
        "postgres_settings": dict(settings_rows),
        "postgres_own": server.own,
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


@contextmanager
def bench_server(settings: Settings, options: BenchOptions) -> Iterator[tuple[Settings, Server]]:
    """The settings the benchmark runs with and the server it measures: its own cluster
    (default), or the one at the configured URL."""
    with ExitStack() as stack:
        url = settings.database_url
        processes, postmaster = None, None
        if options.own_postgres:
            cluster = stack.enter_context(own_cluster(options.cluster_dir))
            url, processes = cluster.url("postgres"), cluster.pids
            postmaster = cluster.postmaster_pid
        settings = bench_settings(settings.replace(database_url=url), options)
        ensure_database(settings.database_url)
        with connect(settings.database_url) as conn:
            loaded = statements.available(conn)
        classifier = statements.Classifier(settings.audit_schema) if loaded else None
        yield settings, Server(settings.database_url, processes, classifier, postmaster)


def run_bench(
    settings: Settings, options: BenchOptions, say: Callable[[str], None] = print
) -> BenchResult:
    """Every measurement (or those `--only` names), in an order where each line starts
    from a quiet database."""
    baselines.check_installed()
    with bench_server(settings, options) as (settings, server):
        return _run_parts(settings, server, options, say)


def run_scaling(
    settings: Settings, options: BenchOptions, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """The scaling series over `options.scale`; returns everything recorded so far."""
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"etl-bench-{os.getpid()}.log"
    with bench_server(settings, options) as (settings, server):
        try:
            return run_series(
                settings, server, list(options.scale), procs=options.procs, seed=options.seed,
                partition_rows=options.scale_partition_rows, results=options.scaling_results,
                log_path=log_path, say=say,
            )  # fmt: skip
        finally:
            if not options.keep:
                cleanup(settings)


def _run_parts(
    settings: Settings, server: Server, options: BenchOptions, say: Callable[[str], None]
) -> BenchResult:
    url = server.url
    say(f"raw table: {options.rows:,} rows over {options.zips:,} zips (seed {options.seed})")
    raw = ensure_raw_table(
        url, RAW_TABLE, rows=options.rows, zips=options.zips, seed=options.seed,
        rebuild=options.rebuild,
    )  # fmt: skip
    result = BenchResult(options, raw, machine=machine_facts(settings, server))
    result.versions = package_versions()
    procs = options.procs
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"etl-bench-{os.getpid()}.log"

    def measure(what: str, action: Callable[..., Line], *args: Any, **kwargs: Any) -> Line:
        say(f"measuring {what} ...")
        line = action(*args, **kwargs)
        speed = "fails" if line.time_to_fail else f"{line.rows_per_second:12,.0f} rows/s"
        say(f"  {line.seconds:8.2f} s  {speed}  exact={line.exact}")
        return line

    try:
        if options.runs("floors"):
            for name in floors.FLOORS:
                result.lines.append(measure(name, floors.floor, name, server, raw, procs))
        if options.runs("seed-style"):
            for index in (False, True):
                what = f"seed-style baseline (index {'used' if index else 'ignored'})"
                result.lines.append(
                    measure(what, baselines.seed_style, server, raw, procs, index=index)
                )
        if options.runs("to-sql"):
            result.lines.append(
                measure("to_sql", baselines.to_sql, server, raw, procs, options.to_sql_share)
            )
        if options.runs("pool"):
            for transform, name in ((IDENTITY, POOL_IDENTITY), (CLEAN, POOL_CLEAN)):
                result.lines.append(
                    measure(name, pool_line, settings, server, raw, transform, name, procs)
                )
        if options.runs("etl-worker") or options.runs("small-partitions"):
            say(f"starting a celery worker with {procs} processes (log: {log_path})")
            with fleet(settings, server, procs, log_path) as workers:
                if options.runs("etl-worker"):
                    _etl_worker_lines(result, workers, options, measure)
                if options.runs("small-partitions"):
                    small = ensure_uniform_table(
                        url, SMALL_TABLE, partitions=options.small_partitions,
                        rows_per_partition=options.small_rows, seed=options.seed,
                    )  # fmt: skip
                    result.small = measure(
                        "small partitions", small_partitions_line, workers, small
                    )
            if options.runs("small-partitions"):
                say("counting round trips per partition through a relay ...")
                result.round_trips = count_round_trips(
                    settings, server, procs, small, log_path, options.round_trip_partitions
                )
                say(f"  {result.round_trips['per_partition']:.1f} round trips per partition")
        if options.runs("enqueue"):
            enqueue_table = ensure_raw_table(
                url, ENQUEUE_TABLE, rows=options.enqueue_partitions,
                zips=options.enqueue_partitions, seed=options.seed, rebuild=options.rebuild,
            )  # fmt: skip
            result.enqueue = measure("enqueue", enqueue_line, settings, enqueue_table)
        if options.runs("frames"):
            say("measuring DataFrame memory and downcasting ...")
            result.frames = measure_frames(settings, raw)
        if options.runs("paths"):
            say("comparing read and write paths ...")
            result.paths = compare_paths(url, raw)
        if options.runs("profile"):
            say(f"profiling {options.profile_partitions} partitions of 10,000 rows ...")
            result.profiles = profile_partitions(
                settings, server, options.profile_partitions, options.seed,
                options.profile_output, log_path,
            )  # fmt: skip
    finally:
        result.machine["load_after"] = os.getloadavg()
        if not options.keep:
            cleanup(settings)
    return result


def _etl_worker_lines(
    result: BenchResult,
    workers: Fleet,
    options: BenchOptions,
    measure: Callable[..., Line],
) -> None:
    """The fixed cost per partition, then identity and clean_companies, then memory."""
    onerow = ensure_raw_table(
        workers.server.url, ONEROW_TABLE, rows=options.onerow_partitions,
        zips=options.onerow_partitions, seed=options.seed, rebuild=options.rebuild,
    )  # fmt: skip
    # First, so the pool processes are warm (libraries loaded, connections open) for the
    # lines that follow; over thousands of partitions warming up is noise.
    result.fixed_cost = measure("fixed cost per partition", fixed_cost_line, workers, onerow)
    etl_lines = [
        measure(name, transform_line, workers, result.raw, transform, name, REFERENCE_ZIPS)
        for transform, name in ((IDENTITY, ETL_IDENTITY), (CLEAN, ETL_CLEAN))
    ]
    result.lines.extend(etl_lines)
    result.memory = memory_check(workers, result.fixed_cost, etl_lines)


def cleanup(settings: Settings) -> None:
    """Drop what the benchmark wrote: targets and its audit schema. The generated tables
    stay (data.py marks each with a comment saying how it was made)."""
    url = settings.database_url
    with connect(url) as conn:
        targets = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename LIKE 'bench\\_%' AND coalesce(obj_description("
            "format('%I', tablename)::regclass, 'pg_class'), '') NOT LIKE 'etl-bench %'"
        ).fetchall()
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(AUDIT_SCHEMA))
        )
    drop_tables(url, *(TableName(t[0]) for t in targets))


def command_line() -> str:
    """How etl-bench was started, for the report: a --database-url or --broker-url given on
    the command line is shown without its password."""
    return shlex.join(["etl-bench", *(redact_url(arg) for arg in sys.argv[1:])])
