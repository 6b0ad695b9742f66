"""A redis-server and a PostgreSQL cluster of a test's own, for faults that take the
broker or the database down: the machine's shared services are never touched.

Each listens on a free 127.0.0.1 port, keeps its files in a temporary directory, and is
killed and removed by `stop()` (the fixtures call it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg
import redis

from etl_worker.devtools.embedded import free_port, redis_answers
from tests.support.services import wait_until


class RedisServer:
    """redis-server on a free port; `persistent` means an append-only file fsynced on every
    write (so a crash loses nothing), otherwise no persistence at all. It listens on
    127.0.0.1 and on `addresses` (a test network's own, tests/support/netns.py)."""

    def __init__(
        self,
        directory: Path,
        *,
        persistent: bool,
        password: str | None = None,
        addresses: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.persistent = persistent
        self.password = password
        self.addresses = addresses
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return self.url_at("127.0.0.1")

    def url_at(self, address: str) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{address}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2)

    def start(self) -> None:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        auth = ["--requirepass", self.password] if self.password else []
        # Without a password Redis answers only loopback clients unless told otherwise; the
        # other addresses are a test network's, reachable from its namespaces alone.
        if self.addresses and not self.password:
            auth += ["--protected-mode", "no"]
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *self.addresses,
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
                *persistence,
                *auth,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: redis_answers(self.url), timeout=20, what=f"redis-server on {self.port}")

    def crash(self) -> None:
        """SIGKILL, as when the broker's machine dies: only what is on disk survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.crash()
        self.start()

    def stop(self) -> None:
        self.crash()


def _as_postgres_user() -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _pg_bin() -> Path:
    out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


class PostgresCluster:
    """A throwaway PostgreSQL cluster (initdb) on a free port, with fsync off: it is there
    to be restarted and thrown away, not to keep data. It listens on 127.0.0.1 and on
    `addresses`, trusting clients of `clients` (a test network's subnet, netns.py)."""

    def __init__(self, *, addresses: tuple[str, ...] = (), clients: str | None = None) -> None:
        self.addresses = addresses
        self.root = Path(tempfile.mkdtemp(prefix="etl-test-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        self._bin = _pg_bin()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        if clients:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {clients} trust\n")
        self.start()
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE etl")

    def url(self, database: str = "etl", address: str = "127.0.0.1") -> str:
        return f"postgresql://postgres@{address}:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*_as_postgres_user(), str(self._bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        listen = ",".join(("127.0.0.1", *self.addresses))
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={listen} -c fsync=off "
            "-c max_connections=50"
        )
        if self.addresses:
            # The server's side of a link cut by dropping packets: end a silent client's
            # session (and its locks) within seconds, as docs/reliability.md advises.
            options += (
                " -c tcp_keepalives_idle=1 -c tcp_keepalives_interval=1"
                " -c tcp_keepalives_count=2 -c tcp_user_timeout=3000"
            )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w",
            "start",
        )  # fmt: skip

    def crash(self) -> None:
        """Immediate shutdown: every session is cut, the next start runs crash recovery."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def restart(self) -> None:
        self.crash()
        self.start()

    def stop(self) -> None:
        try:
            self.crash()
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)
