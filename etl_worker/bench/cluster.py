"""A PostgreSQL cluster of the benchmark's own, so what Postgres spends is measured alone.

On a shared server the benchmark cannot tell its CPU from everyone else's, nor load
`pg_stat_statements` (it must be in `shared_preload_libraries`, which takes a restart). Its
own cluster has neither problem: every process under its postmaster works for the
benchmark, and the statistics of every statement are there to read.

The cluster lives in a directory that outlives the run (initdb on first use only), so the
generated tables are seeded once and reused, 50M rows included; it listens on a free
loopback port and is stopped (fast shutdown) when the benchmark ends. Postgres' own
defaults otherwise, fsync and synchronous commit on: a benchmark of a durable load must
pay for durability.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from etl_worker.devtools.embedded import free_port
from etl_worker.errors import EtlError

#: Loaded at start: per-statement calls, time, rows and WAL (see statements.py).
PRELOAD = "pg_stat_statements"
#: The shared server's locale; text comparisons (EXCEPT ALL, index builds) cost the same.
LOCALE = "C.UTF-8"
#: Server settings besides Postgres' defaults, each with its reason.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "shared_preload_libraries": PRELOAD,
    # Top-level statements only (the default, said here because `all` would count the
    # SELECT inside every COPY twice). Utility statements (COPY, BEGIN, COMMIT) are
    # tracked, each COPY under its own text: room for one per partition of the
    # 4,000-partition line, many times over.
    "pg_stat_statements.track": "top",
    "pg_stat_statements.max": "100000",
    # The benchmark's lines run a few dozen connections at most.
    "max_connections": "100",
}


@dataclass(frozen=True)
class Cluster:
    """A running cluster: where it listens and the postmaster whose processes it counts."""

    directory: Path
    port: int
    postmaster_pid: int

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def pids(self) -> set[int]:
        """The postmaster and every process it started (backends, WAL writer, checkpointer)."""
        try:
            root = psutil.Process(self.postmaster_pid)
            return {root.pid, *(p.pid for p in root.children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()


def _as_postgres_user() -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _bin(tool: str) -> str:
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
    except FileNotFoundError:
        out = None
    if out is not None and out.returncode == 0 and (Path(out.stdout.strip()) / tool).exists():
        return str(Path(out.stdout.strip()) / tool)
    found = shutil.which(tool)
    if found is None:
        raise EtlError(
            f"etl-bench starts its own Postgres cluster but cannot find {tool} — install the "
            "PostgreSQL server, or run on an existing server with --shared-postgres"
        )
    return found


def _run(*command: str) -> None:
    done = subprocess.run([*_as_postgres_user(), *command], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
        raise EtlError(f"{Path(command[0]).name} failed: {' '.join(last)}")


def _owned_by_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _postmaster_pid(data: Path) -> int | None:
    """The pid in postmaster.pid when that process still runs, else None."""
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if psutil.pid_exists(pid) else None


@contextmanager
def own_cluster(directory: Path) -> Iterator[Cluster]:
    """The benchmark's cluster in `directory`, created on first use, running while inside."""
    directory = directory.resolve()
    data = directory / "data"
    directory.mkdir(parents=True, exist_ok=True)
    _owned_by_postgres(directory)
    if _postmaster_pid(data) is not None:
        raise EtlError(
            f"the benchmark's Postgres cluster in {directory} is already running — is another "
            "etl-bench using it? Wait for it, or give this one another --cluster-dir"
        )
    if not (data / "PG_VERSION").exists():
        _run(
            _bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            f"--locale={LOCALE}", "--no-sync",
        )  # fmt: skip
    port = free_port()
    options = " ".join(
        [f"-p {port}", f"-k {directory}", *(f"-c {k}={v}" for k, v in SETTINGS.items())]
    )
    log = directory / "postgres.log"
    _run(_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
    pid = _postmaster_pid(data)
    if pid is None:
        raise EtlError(f"the benchmark's Postgres cluster did not start — see {log}")
    try:
        yield Cluster(directory, port, pid)
    finally:
        _run(_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
