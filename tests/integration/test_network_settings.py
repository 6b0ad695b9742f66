"""Every TCP socket a worker opens carries ETL_NETWORK_TIMEOUT's keepalives and TCP user
timeout, read back from the kernel with getsockopt: the control and data connections to
Postgres (psycopg, ADBC), the heartbeat's own (bounded by half the lease), Redis and RabbitMQ."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import pytest

from etl_worker.celery_app import make_app
from etl_worker.config import Settings
from etl_worker.context import WorkerContext
from tests.support.services import Stack

FD_DIR = "/proc/self/fd"


def socket_fds() -> dict[str, int]:
    """This process's open sockets: their kernel name (socket:[inode]) and fd."""
    found = {}
    for fd in os.listdir(FD_DIR):
        try:
            target = os.readlink(f"{FD_DIR}/{fd}")
        except FileNotFoundError:  # the directory's own fd, closed by now
            continue
        if target.startswith("socket:"):
            found[target] = int(fd)
    return found


def opened_sockets(action: Callable[[], object]) -> list[socket.socket]:
    """The TCP sockets this process opened while `action` ran, still open."""
    before = socket_fds()
    action()
    found = []
    for name, fd in socket_fds().items():
        if name in before:
            continue
        sock = socket.socket(fileno=os.dup(fd))
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            found.append(sock)
        else:
            sock.close()
    return found


def tcp_options(sock: socket.socket) -> dict[str, int]:
    tcp = socket.IPPROTO_TCP
    options = {
        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "idle": sock.getsockopt(tcp, socket.TCP_KEEPIDLE),
        "interval": sock.getsockopt(tcp, socket.TCP_KEEPINTVL),
        "count": sock.getsockopt(tcp, socket.TCP_KEEPCNT),
        "user_timeout_ms": sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT),
    }
    sock.close()
    return options


def given_up_within(seconds: int) -> dict[str, int]:
    """What the kernel should hold for a network timeout of `seconds` (network.py)."""
    step = max(1, seconds // 3)
    return {
        "keepalive": 1,
        "idle": step,
        "interval": step,
        "count": 2,
        "user_timeout_ms": seconds * 1000,
    }


@pytest.fixture
def settings(stack: Stack) -> Settings:
    # Lease 8 s: the heartbeat's connection gives up within 4 s, the others within 6 s.
    return Settings.load(stack.env | {"ETL_NETWORK_TIMEOUT": "6", "ETL_LEASE_SECONDS": "8"})


def test_postgres_connections_of_a_worker_carry_keepalives_and_a_user_timeout(
    settings: Settings,
) -> None:
    ctx = WorkerContext(settings)
    try:
        control = opened_sockets(lambda: ctx.pg)
        data = opened_sockets(lambda: ctx.adbc)
        heartbeat = opened_sockets(ctx.heartbeat.connection)

        assert len(control) == len(data) == len(heartbeat) == 1
        assert tcp_options(control[0]) == given_up_within(6)
        assert tcp_options(data[0]) == given_up_within(6)
        assert tcp_options(heartbeat[0]) == given_up_within(4)
    finally:
        ctx.close()
        ctx.heartbeat.connection().close()


def test_redis_connections_carry_keepalives_and_a_user_timeout(settings: Settings) -> None:
    app = make_app(settings)
    with app.connection_for_write() as conn:
        sockets = opened_sockets(lambda: conn.default_channel.client.ping())

        assert sockets
        assert all(tcp_options(s) == given_up_within(6) for s in sockets)


@pytest.mark.parametrize("stack", ["amqp"], indirect=True)
def test_rabbitmq_connections_carry_keepalives_and_a_user_timeout(settings: Settings) -> None:
    # py-amqp sets its own values (a first probe after 60 s, a TCP user timeout of 1 s) unless
    # given socket_settings (network.amqp_transport_options).
    app = make_app(settings)
    with app.connection_for_write() as conn:
        sockets = opened_sockets(lambda: conn.ensure_connection(max_retries=1))

        assert sockets
        assert all(tcp_options(s) == given_up_within(6) for s in sockets)
