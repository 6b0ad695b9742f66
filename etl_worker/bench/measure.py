"""What one benchmark line is, how it is timed, how its output is checked, and what the
machine's processes spent meanwhile (Postgres' CPU and I/O share, for docs/scaling.md)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import resource
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil
import psycopg
from psycopg import sql

from etl_worker.bench import statements as stmts
from etl_worker.db import TableName, connect, table_exists
from etl_worker.producer import create_target


@dataclass(frozen=True)
class Server:
    """The Postgres the benchmark measures on."""

    url: str
    #: The server's processes when they all work for the benchmark (its own cluster);
    #: None on a shared server, where every postgres process on the machine is counted.
    processes: Callable[[], set[int]] | None = None
    #: pg_stat_statements is loaded: each line gets its statements by kind.
    classifier: stmts.Classifier | None = None
    #: The postmaster of the benchmark's own cluster: backends that exit between two
    #: samples are counted from what it reaped (its children's CPU time).
    postmaster: int | None = None

    @property
    def own(self) -> bool:
        return self.processes is not None

    def at(self, url: str) -> Server:
        """The same server reached at another URL (another database, a relay)."""
        return Server(url, self.processes, self.classifier, self.postmaster)


@dataclass
class Usage:
    """CPU and disk I/O spent during one measurement, from /proc (via psutil)."""

    wall_seconds: float = 0.0
    #: CPU seconds of the server's processes: the benchmark's own cluster, or every
    #: postgres process on the machine when the server is shared.
    postgres_cpu: float = 0.0
    #: ... of the backends connected to the benchmark's database only.
    bench_backends_cpu: float = 0.0
    postgres_read_bytes: int = 0
    postgres_write_bytes: int = 0
    #: CPU seconds the whole machine was busy (all processes, all cores).
    machine_busy_cpu: float = 0.0
    #: CPU seconds of the client processes doing the line's work (pool processes, Celery
    #: worker and its pool, psql): the other side of the cost.
    client_cpu: float = 0.0
    cores: int = field(default_factory=lambda: psutil.cpu_count() or 1)
    #: The server is the benchmark's own: postgres_cpu is the benchmark's alone.
    own_server: bool = False
    statements: stmts.Statements | None = None

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
    #: The line failed: `seconds` is how long it took to fail, there is no throughput.
    time_to_fail: bool = False
    usage: Usage | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        if self.time_to_fail:
            return 0.0
        return self.rows / self.seconds if self.seconds else 0.0


class Sampler:
    """Samples the CPU and I/O counters of postgres processes every `interval` seconds, so
    backends that exit before the end still count (up to their last sample)."""

    def __init__(self, server: Server, clients: Iterable[int] = (), interval: float = 0.2) -> None:
        self.server = server
        self.database_url = server.url
        self.clients = list(clients)
        self.interval = interval
        self._primed = False
        self._first: dict[int, tuple[float, int, int]] = {}
        self._last: dict[int, tuple[float, int, int]] = {}
        self._ours: set[int] = set()
        self._alive: set[int] = set()
        self._reaped = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._monitor: psycopg.Connection | None = None

    def _server_processes(self) -> Iterator[psutil.Process]:
        if self.server.processes is not None:
            for pid in self.server.processes():
                try:
                    yield psutil.Process(pid)
                except psutil.NoSuchProcess:
                    continue
            return
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] == "postgres":
                yield proc

    def _counters(self) -> dict[int, tuple[float, int, int]]:
        seen: dict[int, tuple[float, int, int]] = {}
        for proc in self._server_processes():
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

    def _reaped_cpu(self) -> float:
        """CPU seconds of the postmaster's exited (reaped) children, all time."""
        if self.server.postmaster is None:
            return 0.0
        try:
            cpu = psutil.Process(self.server.postmaster).cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return cpu.children_user + cpu.children_system

    def _sample(self) -> None:
        counters = self._counters()
        self._alive = set(counters)
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
        if self.server.classifier is not None:
            stmts.reset(self._monitor)
        self._machine = psutil.cpu_times()
        self.started = time.perf_counter()
        self._reaped_before = self._reaped_cpu()
        self._sample()
        self._clients_before = self._client_cpu()
        self._thread.start()
        return self

    def _client_cpu(self) -> float:
        # Children started and reaped inside the block (psql) count through rusage; the
        # `clients` outlive it and are read from /proc.
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = reaped.ru_utime + reaped.ru_stime
        for pid in self.clients:
            try:
                cpu = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            # With what their own reaped children spent (a pool process's psql pair).
            total += cpu.user + cpu.system + cpu.children_user + cpu.children_system
        return total

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._reaped = self._reaped_cpu() - self._reaped_before
        # Gone since the last sample: reaped, so in `_reaped` whole.
        self._alive = {pid for pid in self._alive if psutil.pid_exists(pid)}
        self.client = self._client_cpu() - self._clients_before
        self.wall = time.perf_counter() - self.started
        machine = psutil.cpu_times()
        self.machine_busy = sum(
            getattr(machine, f) - getattr(self._machine, f)
            for f in ("user", "system", "nice", "irq", "softirq")
            if hasattr(machine, f)
        )
        self.statements = None
        if self._monitor is not None:
            if self.server.classifier is not None:
                self.statements = stmts.collect(self._monitor, self.server.classifier)
            self._monitor.close()

    def _server_cpu(self, deltas: dict[int, tuple[float, ...]]) -> float:
        """The server's CPU over the block. On the benchmark's own cluster, a process that
        exited counts whole from what the postmaster reaped, less what it had spent before
        the block; elsewhere, up to its last sample."""
        if self.server.postmaster is None:
            return sum(d[0] for d in deltas.values())
        alive = sum(d[0] for pid, d in deltas.items() if pid in self._alive)
        before = sum(self._first[pid][0] for pid in self._first if pid not in self._alive)
        return alive + self._reaped - before

    def usage(self) -> Usage:
        deltas = {
            pid: tuple(b - a for a, b in zip(self._first[pid], last, strict=True))
            for pid, last in self._last.items()
            if pid != self._own_pid
        }
        return Usage(
            wall_seconds=self.wall,
            postgres_cpu=self._server_cpu(deltas),
            bench_backends_cpu=sum(d[0] for pid, d in deltas.items() if pid in self._ours),
            postgres_read_bytes=int(sum(d[1] for d in deltas.values())),
            postgres_write_bytes=int(sum(d[2] for d in deltas.values())),
            machine_busy_cpu=self.machine_busy,
            client_cpu=self.client,
            own_server=self.server.own,
            statements=self.statements,
        )


@contextmanager
def sampled(server: Server, clients: Iterable[int] | None = None) -> Iterator[Sampler]:
    """Time a block and sample what Postgres and the `clients` processes (default: this
    process's children, e.g. a pool) spent on it; read `.usage()` afterwards."""
    if clients is None:
        clients = [c.pid for c in multiprocessing.active_children() if c.pid is not None]
    with Sampler(server, clients) as sampler:
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
def process_pool(
    procs: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> Iterator[multiprocessing.pool.Pool]:
    """`procs` forked worker processes, all started before the caller's clock starts."""
    pool = multiprocessing.get_context("fork").Pool(procs, initializer, initargs)
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
