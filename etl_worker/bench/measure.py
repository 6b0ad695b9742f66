"""What one benchmark line is, how it is timed, how its output is checked, and what the
machine's processes spent meanwhile (Postgres' CPU and I/O share, for docs/scaling.md)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil
import psycopg
from psycopg import sql

from etl_worker.db import TableName, connect, table_exists
from etl_worker.producer import create_target


@dataclass
class Usage:
    """CPU and disk I/O spent during one measurement, from /proc (via psutil)."""

    wall_seconds: float = 0.0
    #: CPU seconds of every postgres process on the machine (the server is shared).
    postgres_cpu: float = 0.0
    #: ... of the backends connected to the benchmark's database only.
    bench_backends_cpu: float = 0.0
    postgres_read_bytes: int = 0
    postgres_write_bytes: int = 0
    #: CPU seconds the whole machine was busy (all processes, all cores).
    machine_busy_cpu: float = 0.0
    #: CPU seconds of the client processes doing the line's work (pool processes, Celery
    #: worker and its pool): the Python side of the cost.
    client_cpu: float = 0.0
    cores: int = field(default_factory=lambda: psutil.cpu_count() or 1)

    def share(self, cpu_seconds: float) -> float:
        """Share of the machine's cores over the wall time."""
        return cpu_seconds / (self.wall_seconds * self.cores) if self.wall_seconds else 0.0


@dataclass
class Line:
    """One line of the benchmark table."""

    name: str
    seconds: float
    rows: int
    exact: bool | None
    note: str = ""
    #: The seconds (and rows/s) were measured on a subset and scaled to the whole table.
    extrapolated: bool = False
    usage: Usage | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


class Sampler:
    """Samples the CPU and I/O counters of postgres processes every `interval` seconds, so
    backends that exit before the end still count (up to their last sample)."""

    def __init__(
        self, database_url: str, clients: Iterable[int] = (), interval: float = 0.2
    ) -> None:
        self.database_url = database_url
        self.clients = list(clients)
        self.interval = interval
        self._primed = False
        self._first: dict[int, tuple[float, int, int]] = {}
        self._last: dict[int, tuple[float, int, int]] = {}
        self._ours: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._monitor: psycopg.Connection | None = None

    def _counters(self) -> dict[int, tuple[float, int, int]]:
        seen: dict[int, tuple[float, int, int]] = {}
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] != "postgres":
                continue
            try:
                cpu = proc.cpu_times()
                io = proc.io_counters()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            seen[proc.pid] = (cpu.user + cpu.system, io.read_bytes, io.write_bytes)
        return seen

    def _our_backends(self) -> set[int]:
        if self._monitor is None:
            return set()
        rows = self._monitor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
        return {int(r[0]) for r in rows}

    def _sample(self) -> None:
        counters = self._counters()
        for pid, value in counters.items():
            # A process first seen later started after the measurement did: it counts from 0.
            self._first.setdefault(pid, value if not self._primed else (0.0, 0, 0))
            self._last[pid] = value
        self._primed = True
        self._ours |= self._our_backends()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except Exception:  # a sample lost is a sample lost; never break the benchmark
                pass

    def __enter__(self) -> Sampler:
        self._monitor = connect(self.database_url)
        self._own_pid = self._monitor.info.backend_pid
        self._machine = psutil.cpu_times()
        self._started = time.perf_counter()
        self._sample()
        self._clients_before = self._client_cpu()
        self._thread.start()
        return self

    def _client_cpu(self) -> float:
        total = 0.0
        for pid in self.clients:
            try:
                cpu = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += cpu.user + cpu.system
        return total

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.client = self._client_cpu() - self._clients_before
        self.wall = time.perf_counter() - self._started
        machine = psutil.cpu_times()
        self.machine_busy = sum(
            getattr(machine, f) - getattr(self._machine, f)
            for f in ("user", "system", "nice", "irq", "softirq")
            if hasattr(machine, f)
        )
        if self._monitor is not None:
            self._monitor.close()

    def usage(self) -> Usage:
        deltas = {
            pid: tuple(b - a for a, b in zip(self._first[pid], last, strict=True))
            for pid, last in self._last.items()
            if pid != self._own_pid
        }
        return Usage(
            wall_seconds=self.wall,
            postgres_cpu=sum(d[0] for d in deltas.values()),
            bench_backends_cpu=sum(d[0] for pid, d in deltas.items() if pid in self._ours),
            postgres_read_bytes=int(sum(d[1] for d in deltas.values())),
            postgres_write_bytes=int(sum(d[2] for d in deltas.values())),
            machine_busy_cpu=self.machine_busy,
            client_cpu=self.client,
        )


@contextmanager
def sampled(database_url: str, clients: Iterable[int] | None = None) -> Iterator[Sampler]:
    """Time a block and sample what Postgres and the `clients` processes (default: this
    process's children, e.g. a pool) spent on it; read `.usage()` afterwards."""
    if clients is None:
        clients = [c.pid for c in multiprocessing.active_children() if c.pid is not None]
    with Sampler(database_url, clients) as sampler:
        yield sampler


def fresh_target(database_url: str, raw: TableName, target: TableName, column: str) -> None:
    """An empty target like the raw table, with the partition index etl-enqueue gives it,
    so every line writes into the same kind of table."""
    with connect(database_url) as conn:
        if table_exists(conn, target):
            conn.execute(sql.SQL("DROP TABLE {}").format(target.ident))
        create_target(conn, raw, target, column)


def drop_tables(database_url: str, *tables: TableName) -> None:
    with connect(database_url) as conn:
        for table in tables:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table.ident))


def difference(
    conn: psycopg.Connection, left: sql.Composable, right: sql.Composable
) -> tuple[int, int]:
    """(rows of `left` missing from `right`, rows of `right` not in `left`), as multisets
    (EXCEPT ALL): (0, 0) means the same rows, each the same number of times."""
    counts = []
    for a, b in ((left, right), (right, left)):
        query = sql.SQL("SELECT count(*) FROM (SELECT * FROM {} EXCEPT ALL SELECT * FROM {}) d")
        row = conn.execute(query.format(a, b)).fetchone()
        counts.append(int(row[0]) if row else 0)
    return counts[0], counts[1]


def tables_match(database_url: str, left: TableName, right: TableName) -> bool:
    with connect(database_url) as conn:
        return difference(conn, left.ident, right.ident) == (0, 0)


@contextmanager
def process_pool(procs: int) -> Iterator[multiprocessing.pool.Pool]:
    """`procs` forked worker processes, all started before the caller's clock starts."""
    pool = multiprocessing.get_context("fork").Pool(procs)
    try:
        yield pool
    finally:
        pool.close()
        pool.join()


def id_ranges(database_url: str, table: TableName, parts: int) -> list[tuple[int, int]]:
    """`parts` half-open ranges of the table's `id` column covering every row."""
    with connect(database_url) as conn:
        query = sql.SQL("SELECT min(id), max(id) FROM {}").format(table.ident)
        row = conn.execute(query).fetchone()
    low, high = (int(row[0]), int(row[1]) + 1) if row and row[0] is not None else (0, 1)
    step = max(1, -(-(high - low) // parts))
    return [(lo, min(high, lo + step)) for lo in range(low, high, step)]
