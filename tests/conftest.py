"""Shared fixtures: a fresh database and Redis namespace per test, real worker processes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etl_worker.bench.fleet import delete_redis_prefix
from tests.support import rabbit
from tests.support.services import (
    BASE_BROKER_URL,
    Flower,
    Stack,
    Worker,
    create_database,
    drop_database,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (addopts: -n 2 --dist loadgroup) every fault test runs in one
    process, one after another: they restart servers, cut links and hold short leases, and
    two of them side by side would each be the other's noisy neighbour."""
    for item in items:
        if item.get_closest_marker("faults"):
            item.add_marker(pytest.mark.xdist_group("serial"))


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """URL of a new, empty database; dropped after the test."""
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def stack(request: pytest.FixtureRequest, fresh_database: str) -> Iterator[Stack]:
    """A database, a broker namespace and a queue of this test's own. The broker is Redis
    (a key prefix) unless the test is parametrised with "amqp" (`rabbit.BOTH_BROKERS`):
    RabbitMQ, on a virtual host of the test's own, deleted after."""
    tag = uuid.uuid4().hex[:10]
    if getattr(request, "param", "redis") == "amqp":
        if not rabbit.available():
            why = f"no RabbitMQ (rabbitmqctl and {rabbit.BASE_AMQP_URL}) on this machine"
            if os.environ.get("CI"):
                pytest.fail(f"{why}: .ci/run must start it in CI")
            pytest.skip(why)
        vhost = rabbit.Vhost()
        try:
            yield Stack(fresh_database, vhost.url, "", f"etl-{tag}", vhost=vhost)
        finally:
            vhost.delete()
        return
    prefix = f"etltest-{tag}:"
    yield Stack(fresh_database, BASE_BROKER_URL, prefix, f"etl-{tag}")
    delete_redis_prefix(BASE_BROKER_URL, prefix)


@pytest.fixture
def start_worker(stack: Stack, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start real Celery workers on the test's stack; all are stopped after the test."""
    workers: list[Worker] = []

    def start(
        concurrency: int = 2,
        name: str | None = None,
        extra_args: list[str] | None = None,
        wrapper: list[str] | None = None,
        **extra_env: str,
    ) -> Worker:
        """A worker with `-c concurrency`, plus `extra_args` (e.g. ["--autoscale=4,1"]),
        `extra_env` (ETL_* settings, AUTOSCALE_KEEPALIVE, ...) and an optional `wrapper`
        command it runs under (e.g. tini)."""
        env = stack.env | {k: str(v) for k, v in extra_env.items()}
        index = len(workers)
        worker = Worker(
            env,
            tmp_path / f"worker{index}.log",
            name=name,
            concurrency=concurrency,
            extra_args=extra_args,
            wrapper=wrapper,
        )
        workers.append(worker)
        return worker.wait_ready()

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def start_flower(stack: Stack, tmp_path: Path) -> Iterator[Callable[..., Flower]]:
    """Start a real Flower (basic auth on, a free 127.0.0.1 port) on the test's stack."""
    started: list[Flower] = []

    def start(**extra_env: str) -> Flower:
        env = stack.env | {k: str(v) for k, v in extra_env.items()}
        flower = Flower(env, tmp_path / f"flower{len(started)}.log")
        started.append(flower)
        return flower.wait_ready()

    yield start
    for flower in started:
        flower.stop()


@pytest.fixture
def gate(stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path) -> Iterator[Path]:
    """A closed gate: partitions run with `tests.support.transforms:wait_for_gate` wait while
    this file exists; the test deletes it to let them go. Set up after `start_worker`, so it
    opens before the workers are stopped and their warm shutdown has nothing to wait for."""
    path = tmp_path / "gate"
    path.touch()
    stack.extra["ETL_TEST_GATE_FILE"] = str(path)
    yield path
    path.unlink(missing_ok=True)
