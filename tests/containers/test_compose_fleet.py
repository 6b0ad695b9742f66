"""docker-compose.yml run for real: the image built from the Dockerfile, Postgres, Redis,
three worker containers (which sweep the fleet themselves) and Flower, and the demo (seed,
then enqueue and wait) as `docker compose up --scale worker=3` runs it. Then worker
containers killed, stopped and wedged mid-run.

The stack is the module's own Compose project (unique name, random passwords, removed with
its volumes after), with the override tests/containers/demo_stack.py describes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from tests.containers.demo_stack import (
    REDIS,
    WORKER_MEMORY_MIB,
    Fleet,
    demo_run_finished_once,
    fleet_fixture,
)
from tests.support.compose import docker, health, logs, main_process, state
from tests.support.data import audit_rows
from tests.support.reliability import exactly_once
from tests.support.runs import rows_in_state, wait_for_run_end
from tests.support.services import wait_until
from tests.support.transforms import WAIT_FOR_GATE

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

WORKERS = 3


fleet = fleet_fixture(REDIS, WORKERS)


def test_the_demo_runs_once_through_three_worker_containers_and_every_service_is_healthy(
    fleet: Fleet,
) -> None:
    project = fleet.project
    run_id = demo_run_finished_once(fleet)
    partitions = len(audit_rows(fleet.database_url, run_id))
    workers = fleet.workers()
    # The image carries the report extra: etl-report draws its charts in a one-off container.
    report = project("run", "--rm", "--no-deps", "-T", "worker", "etl-report", run_id,
                     "--html", "/tmp/report.html")  # fmt: skip
    assert f"run {run_id}, {partitions} partitions, 0 failed" in report
    for worker in workers:  # each sized its pool from its container's limit, not the host's
        budget = re.search(r"autoscaler: memory allows .* budget ([\d,]+) MiB", logs(worker))
        assert budget is not None and int(budget[1].replace(",", "")) <= WORKER_MEMORY_MIB
    services = ["postgres", "redis", "flower"]
    for container in [*(project.container(s) for s in services), *workers]:
        wait_until(lambda c=container: health(c) == "healthy", 120, 1, f"{container} healthy")


def test_a_killed_and_a_stopped_worker_container_lose_and_double_nothing(fleet: Fleet) -> None:
    project, url = fleet.project, fleet.database_url
    killed, stopped, survivor = fleet.workers()
    node = {c: project.node(c) for c in (killed, stopped, survivor)}
    (fleet.gate / "closed").touch()
    out = project("run", "--rm", "--no-deps", "-T", "enqueue", "etl-enqueue", "--all-zips",
                  "--transform", WAIT_FOR_GATE)  # fmt: skip
    run_id = out.splitlines()[0]

    def held_by(container: str) -> dict[str | None, dict[str, object]]:
        started = rows_in_state(url, run_id, "started")
        return {k: r for k, r in started.items() if r["worker"] == node[container]}

    wait_until(lambda: held_by(killed) and held_by(stopped), 120, 0.2, "both victims busy")
    # The gate holds them: each victim is mid-partition on these, and stays so.
    in_flight, finishing = held_by(killed), held_by(stopped)
    docker("kill", killed)  # SIGKILL: the container dies with its partitions mid-transform
    stopping = subprocess.Popen(["docker", "stop", "--time", "120", stopped])
    try:
        wait_until(lambda: "Warm shutdown" in logs(stopped), 60, 0.2, "the warm shutdown")
        assert state(stopped, "{{.State.Running}}") == "true"  # waits for its partitions
        (fleet.gate / "closed").unlink()
        assert stopping.wait(120) == 0
    finally:
        stopping.kill()
    wait_for_run_end(url, run_id, timeout=180)

    assert state(killed, "{{.State.ExitCode}}") == "137"
    assert state(stopped, "{{.State.ExitCode}}") == "0"
    rows = audit_rows(url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    for key in finishing:  # finished by the stopped container before it exited
        assert rows[key]["worker"] == node[stopped] and rows[key]["attempts"] == 1
    assert "WorkerLostError" not in logs(stopped)
    for key in in_flight:  # swept after the lease expired, finished elsewhere
        assert rows[key]["requeues"] >= 1 and rows[key]["worker"] != node[killed]
    exactly_once(
        url,
        "worker container killed mid-run, another stopped",
        "`docker kill` on a worker container holding zips, `docker stop` on a second one",
        f"the surviving workers' own sweep re-enqueued the killed container's {len(in_flight)} "
        "zip(s) once their lease expired and the third container finished them; the stopped one "
        f"finished its {len(finishing)} running zip(s) (warm shutdown) and exited 0",
    )


def test_a_wedged_worker_container_turns_unhealthy_then_healthy_when_it_resumes(
    fleet: Fleet,
) -> None:
    worker = fleet.workers()[0]
    wait_until(lambda: health(worker) == "healthy", 120, 1, "a healthy worker")
    # SIGSTOP Celery's main process: it stays alive (docker sees it running) but answers
    # nothing; `docker pause` would freeze the health check's own process too.
    pid = main_process(worker)
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: health(worker) == "unhealthy", 120, 1, "the wedge to be noticed")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: health(worker) == "healthy", 120, 1, "the worker healthy again")
