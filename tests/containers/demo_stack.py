"""The Compose project the container tests bring up: docker-compose.yml with an override
that changes only what a test needs, on either broker's services.

The override publishes Postgres on a free loopback port for the assertions (nothing on
5432, 6379 or 5672), runs the identity transform (so the target must equal the raw table
row for row), sets short lease and sweep timings as in the fault tests and a health check
every 15 s, and mounts the tests' transforms and a gate directory into the containers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import IDENTITY, REPO
from tests.support.compose import ComposeProject, logs, state
from tests.support.data import audit_rows, scalar, table_difference
from tests.support.services import wait_until

WORKER_MEMORY_MIB = 3072
DEMO = {
    "DEMO_ROWS": "20000",
    "DEMO_ZIPS": "100",
    "WORKER_AUTOSCALE": "2,1",
    "WORKER_MEMORY_LIMIT": f"{WORKER_MEMORY_MIB}m",
    "FLOWER_PORT": "0",
}
#: Short timings, in the order the sweep needs (as in the fault tests): a killed
#: container's lease runs out 20 s after its last renewal (long enough that a busy machine
#: does not starve a live one's renewal that long) and the workers take a sweep turn every
#: second; a partition may wait at the gate for up to a minute.
TIMINGS = {
    "ETL_LEASE_SECONDS": "20",
    "ETL_SWEEP_INTERVAL": "1",
    "ETL_TASK_TIME_LIMIT": "60",
    "ETL_VISIBILITY_TIMEOUT": "90",
    "ETL_RETRY_BACKOFF_MAX": "2",
}
GATE = "/gate/closed"


@dataclass(frozen=True)
class Services:
    """The names a broker's half of docker-compose.yml gives its services."""

    broker: str
    worker: str
    enqueue: str
    #: Services that run the image besides the worker (each gets the test's settings).
    others: tuple[str, ...]
    #: Global options before `up` (a profile), then the services `up` names (all if none).
    profile: tuple[str, ...] = ()
    named: tuple[str, ...] = ()


REDIS = Services("redis", "worker", "enqueue", others=("flower", "seed", "enqueue"))
RABBITMQ = Services(
    "rabbitmq",
    "worker-rabbitmq",
    "enqueue-rabbitmq",
    others=("seed", "enqueue-rabbitmq"),
    profile=("--profile", "rabbitmq"),
    # As the file's header says: naming the services leaves Redis (and Flower) out.
    named=("postgres", "seed", "rabbitmq", "worker-rabbitmq", "enqueue-rabbitmq"),
)


def override(gate: Path, services: Services) -> dict[str, object]:
    etl = {
        "environment": {
            "ETL_TRANSFORM": IDENTITY,
            "ETL_TEST_GATE_FILE": GATE,
            "PYTHONPATH": "/opt/etl-tests",  # tests.support.transforms
            **TIMINGS,
        },
        "volumes": [f"{gate}:/gate:ro", f"{REPO / 'tests'}:/opt/etl-tests/tests:ro"],
    }
    checked = {"flower": {**etl, "healthcheck": {"interval": "15s"}}}
    return {
        "services": {
            "postgres": {"ports": ["127.0.0.1::5432"]},
            services.worker: {**etl, "healthcheck": {"interval": "15s", "retries": 1}},
            **{name: checked.get(name, etl) for name in services.others},
        }
    }


@dataclass
class Fleet:
    project: ComposeProject
    gate: Path
    database_url: str
    services: Services
    #: Worker containers it was brought up with.
    size: int

    def workers(self) -> list[str]:
        return self.project.containers(self.services.worker, running=True)


@contextmanager
def running_fleet(directory: Path, services: Services, workers: int) -> Iterator[Fleet]:
    """The stack up with `workers` worker containers; logs saved and everything removed
    (volumes too) after, whatever happened."""
    gate = directory / "gate"
    gate.mkdir()
    gate.chmod(0o755)  # the containers' user reads it
    project = ComposeProject(directory, env=DEMO, override=override(gate, services))
    try:
        scale = ["--scale", f"{services.worker}={workers}"]
        project(*services.profile, "up", "--detach", *scale, *services.named, timeout=600)
        yield Fleet(project, gate, project.database_url(), services, workers)
    finally:
        log = directory / "compose.log"
        try:
            project.save_logs(log)
            print(f"compose logs: {log}")  # shown when a test fails
        finally:
            project.down(*services.profile)


def fleet_fixture(services: Services, workers: int) -> Callable[..., Any]:
    """A module-scoped `fleet` fixture: the stack up once for the module's tests (each
    module is one project; `image` builds the project's image first)."""

    @pytest.fixture(scope="module")
    def fleet(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
        with running_fleet(tmp_path_factory.mktemp("compose"), services, workers) as running:
            yield running

    return fleet


def demo_run_finished_once(fleet: Fleet) -> str:
    """Wait for the stack's one-shot enqueue service (the demo run) to exit, then check that
    it exited 0, every zip finished, each of the fleet's worker containers took part, and
    the target equals the raw table. Returns the run id."""
    project, url = fleet.project, fleet.database_url
    enqueue = project.container(fleet.services.enqueue)
    wait_until(lambda: state(enqueue, "{{.State.Status}}") == "exited", 300, 1, "the demo run")
    output = logs(enqueue)
    assert state(enqueue, "{{.State.ExitCode}}") == "0", output
    run_id = output.splitlines()[0]
    rows = audit_rows(url, run_id)
    partitions = scalar(url, "SELECT count(*) FROM (SELECT DISTINCT zip_code FROM raw_companies) z")
    assert len(rows) == partitions
    assert {r["state"] for r in rows.values()} == {"finished"}
    running = fleet.workers()
    assert len(running) == fleet.size
    assert {r["worker"] for r in rows.values()} == {project.node(w) for w in running}
    assert table_difference(url, "raw_companies", "clean_companies") == (0, 0)
    return run_id
