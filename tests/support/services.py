"""Throwaway databases, Redis key prefixes and real Celery worker processes for tests.

Every test gets its own database (dropped after) and its own Redis key prefix and queue
(deleted after), so test runs sharing the machine's Postgres and Redis never see each other.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
from psycopg import sql

BASE_DATABASE_URL = os.environ.get(
    "ETL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BASE_BROKER_URL = os.environ.get("ETL_TEST_BROKER_URL", "redis://127.0.0.1:6379/0")


def with_database(url: str, name: str) -> str:
    head, _, _ = url.rpartition("/")
    return f"{head}/{name}"


def create_database(base_url: str = BASE_DATABASE_URL, prefix: str = "etl_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(base_url, name)


def drop_database(url: str, base_url: str = BASE_DATABASE_URL) -> None:
    name = url.rpartition("/")[2]
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def delete_redis_prefix(broker_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(broker_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def wait_until(
    condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> object:
    """Poll `condition` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


@dataclass
class Stack:
    """The environment one test runs the tool in: database, broker prefix and queue."""

    database_url: str
    broker_url: str
    prefix: str
    queue: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
        env.update(
            ETL_DATABASE_URL=self.database_url,
            ETL_BROKER_URL=self.broker_url,
            ETL_REDIS_KEY_PREFIX=self.prefix,
            ETL_QUEUE=self.queue,
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra)
        return env


class Worker:
    """A real `celery -A etl_worker worker` process in its own process group."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        name: str | None = None,
        concurrency: int = 2,
        extra_args: list[str] | None = None,
    ) -> None:
        self.name = name or f"w{uuid.uuid4().hex[:6]}@%h"
        self.log_path = log_path
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "etl_worker",
            "worker",
            "-n",
            self.name,
            "-c",
            str(concurrency),
            "-Q",
            env["ETL_QUEUE"],
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
            *(extra_args or []),
        ]
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            args,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> Worker:
        wait_until(
            lambda: " ready." in self.log() or self.process.poll() is not None,
            timeout,
            what=f"worker {self.name} to start",
        )
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()}")
        return self

    def pool_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def kill_group(self) -> None:
        """SIGKILL the worker and its pool at once, as when a machine is terminated."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
        try:
            os.killpg(self.pid, signal.SIGKILL)  # stray pool children, if any
        except ProcessLookupError:
            pass
        self._log.close()
