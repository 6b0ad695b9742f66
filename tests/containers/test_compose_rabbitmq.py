"""docker-compose.yml's rabbitmq profile run for real: Postgres, RabbitMQ (the rabbitmq:3
image, or its stand-in built from Debian's rabbitmq-server), two worker containers on
amqp:// and the demo through them, with no Redis in the project. Then a worker container
killed mid-run: RabbitMQ returns its unacked messages when its connection closes, and the
other finishes them.

The stack is the module's own Compose project, with the override tests/containers/demo_stack.py
describes.
"""

from __future__ import annotations

import time

import pytest

from tests.containers.demo_stack import RABBITMQ, Fleet, demo_run_finished_once, fleet_fixture
from tests.support.compose import docker, state
from tests.support.data import audit_rows
from tests.support.reliability import exactly_once
from tests.support.runs import rows_in_state, wait_for_run_end
from tests.support.services import wait_until
from tests.support.transforms import WAIT_FOR_GATE

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

WORKERS = 2


fleet = fleet_fixture(RABBITMQ, WORKERS)


def test_the_demo_runs_once_through_worker_containers_on_rabbitmq_quorum_queues(
    fleet: Fleet,
) -> None:
    project = fleet.project
    demo_run_finished_once(fleet)
    # The profile replaces Redis, it does not run beside it.
    assert project.containers("redis") == [] and project.containers("flower") == []
    # The queue the workers consume is a quorum queue with the delivery limit set.
    broker = project.container(fleet.services.broker)
    queues = docker("exec", broker, "rabbitmqctl", "-q", "list_queues", "name", "type",
                    "arguments")  # fmt: skip
    etl = [line for line in queues.splitlines() if line.startswith("etl\t")]
    assert len(etl) == 1 and "quorum" in etl[0] and "x-delivery-limit" in etl[0], queues


def test_a_killed_worker_container_s_messages_return_when_its_connection_closes(
    fleet: Fleet,
) -> None:
    project, url = fleet.project, fleet.database_url
    killed, survivor = fleet.workers()
    node = {c: project.node(c) for c in (killed, survivor)}
    (fleet.gate / "closed").touch()
    out = project(*RABBITMQ.profile, "run", "--rm", "--no-deps", "-T", "enqueue-rabbitmq",
                  "etl-enqueue", "--all-zips", "--transform", WAIT_FOR_GATE)  # fmt: skip
    run_id = out.splitlines()[0]

    def held_by_killed() -> dict[str | None, dict[str, object]]:
        started = rows_in_state(url, run_id, "started")
        return {k: r for k, r in started.items() if r["worker"] == node[killed]}

    wait_until(held_by_killed, 120, 0.2, "the victim busy")
    in_flight = held_by_killed()  # the gate holds them mid-partition
    docker("kill", killed)  # SIGKILL: its connection to RabbitMQ closes with it
    killed_at = time.monotonic()
    (fleet.gate / "closed").unlink()
    recovered = wait_for_run_end(url, run_id, timeout=240) - killed_at

    assert state(killed, "{{.State.ExitCode}}") == "137"
    rows = audit_rows(url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    for key in in_flight:  # redelivered by RabbitMQ, claimed again once the lease ran out
        assert rows[key]["worker"] == node[survivor] and rows[key]["attempts"] >= 2
    exactly_once(
        url,
        "worker container killed mid-run, on RabbitMQ (Compose rabbitmq profile)",
        "`docker kill` on one of two worker containers holding zips",
        f"RabbitMQ returned the killed container's unacked messages when its connection "
        f"closed; the other container claimed its {len(in_flight)} running zip(s) once "
        "their lease expired and finished the run",
        recovery_seconds=recovered,
    )
