"""Throwaway databases, Redis key prefixes and real Celery worker processes for tests.

Every test gets its own database (dropped after) and its own Redis key prefix and queue
(deleted after), so test runs sharing the machine's Postgres and Redis never see each other.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

from etl_worker.brokers import AMQP, broker_kind, ready_messages
from etl_worker.celery_app import make_app
from etl_worker.config import Settings
from etl_worker.devtools.embedded import free_port

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
    #: The RabbitMQ virtual host of an "amqp" stack (tests/support/rabbit.py), else None.
    vhost: Any = None

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
        env.update(
            ETL_DATABASE_URL=self.database_url,
            ETL_BROKER_URL=self.broker_url,
            ETL_REDIS_KEY_PREFIX=self.prefix,
            ETL_QUEUE=self.queue,
            # The tests' own transforms and contracts and the examples, as an operator
            # lists theirs.
            ETL_TRANSFORM_MODULES="tests.support.transforms,tests.support.contracts,examples",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra)
        return env

    @property
    def broker(self) -> str:
        """ "redis" or "amqp" (RabbitMQ), from the broker URL."""
        return broker_kind(self.broker_url)

    def queued(self) -> int:
        """Messages waiting in the stack's queue (its Redis list, under the key prefix; its
        RabbitMQ queue's ready messages)."""
        if self.broker == AMQP:
            app = make_app(Settings.load(self.env))
            return ready_messages(app, self.queue)
        client = redis.Redis.from_url(self.broker_url)
        try:
            return int(client.llen(self.prefix + self.queue))
        finally:
            client.close()


def celery_command(subcommand: str) -> list[str]:
    """`celery -A etl_worker SUBCOMMAND` with this interpreter, as a user would start it."""
    return [sys.executable, "-m", "celery", "-A", "etl_worker", subcommand]


class ServiceProcess:
    """A real process of ours in its own process group, logging to a file; `stop()` ends it
    and anything it started."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
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

    def kill_group(self) -> None:
        """SIGKILL the process and its children at once, as when a machine is terminated."""
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
            os.killpg(self.pid, signal.SIGKILL)  # stray children, if any
        except ProcessLookupError:
            pass
        self._log.close()

    def _fail_if_exited(self, what: str) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"{what} exited with {self.process.returncode}:\n{self.log()}")


class Worker(ServiceProcess):
    """A real `celery -A etl_worker worker` process in its own process group."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        name: str | None = None,
        concurrency: int = 2,
        extra_args: list[str] | None = None,
        wrapper: list[str] | None = None,
    ) -> None:
        self.name = name or f"w{uuid.uuid4().hex[:6]}@%h"
        args = [
            *(wrapper or []),  # e.g. ["tini", "-s", "--"], as the container image runs it
            *celery_command("worker"),
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
        super().__init__(args, env, log_path)

    def wait_ready(self, timeout: float = 60.0) -> Worker:
        wait_until(
            lambda: " ready." in self.log() or self.process.poll() is not None,
            timeout,
            what=f"worker {self.name} to start",
        )
        self._fail_if_exited(f"worker {self.name}")
        return self

    def pool_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


class Flower(ServiceProcess):
    """A real `celery -A etl_worker flower` on a free 127.0.0.1 port, with basic auth."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        user: str = "etl",
        password: str = "s3cret",
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.credentials = f"{user}:{password}"
        args = [
            *celery_command("flower"),
            "--address=127.0.0.1",
            f"--port={self.port}",
            *(extra_args or []),
        ]
        super().__init__(args, dict(env) | {"FLOWER_BASIC_AUTH": self.credentials}, log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, *, auth: bool = True) -> HttpReply:
        request = urllib.request.Request(self.url + path)
        if auth:
            token = base64.b64encode(self.credentials.encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return HttpReply(reply.status, reply.read().decode())
        except urllib.error.HTTPError as exc:
            return HttpReply(exc.code, exc.read().decode(errors="replace"))

    def _answers(self) -> bool:
        try:
            return self.get("/healthcheck", auth=False).status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> Flower:
        wait_until(
            lambda: self._answers() or self.process.poll() is not None,
            timeout,
            interval=0.3,
            what="flower to answer",
        )
        self._fail_if_exited("flower")
        return self
