"""What the worker's main process knows of its pool processes, from Celery's requests."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from etl_worker.celery_app import SWEEP_TASK_NAME, TASK_NAME
from etl_worker.config import Settings
from etl_worker.supervisor import Attempt, Supervisor


def request(pid: int | None = 4242, name: str = TASK_NAME, **kwargs: Any) -> SimpleNamespace:
    kwargs = {"run_id": "r1", "zip": "10016", "part_id": 7, "split": [0, 500]} | kwargs
    return SimpleNamespace(id="task-1", name=name, worker_pid=pid, kwargs=kwargs)


def test_an_accepted_partition_request_names_its_attempt_and_lease_owner() -> None:
    attempt = Attempt.of(request(), "node1")

    assert attempt == Attempt("task-1", 4242, "r1", 7, "10016[0,500)", "node1:4242:task-1")


def test_requests_that_are_no_running_partition_attempt_are_left_out() -> None:
    assert Attempt.of(request(pid=None), "node1") is None  # no pool process took it yet
    assert Attempt.of(request(name=SWEEP_TASK_NAME), "node1") is None
    assert Attempt.of(request(part_id="not a number"), "node1") is None


def test_the_main_process_knows_each_pool_process_s_partition_and_last_error() -> None:
    running = [request(pid=11), request(pid=12, zip=None, split=None, part_id=8)]
    supervisor = Supervisor(Settings.load(environ={}), "w1@node1", active=lambda: running)

    supervisor.refresh()
    supervisor.attempt_ended(running[1], ValueError("cannot parse revenue"))

    pool = {p.pid: p for p in supervisor.pool()}
    assert pool[11].attempt is not None and pool[11].attempt.label == "10016[0,500)"
    assert pool[11].last_error is None
    assert pool[12].last_error == "ValueError: cannot parse revenue"
    running.clear()
    supervisor.refresh()
    assert all(p.attempt is None for p in supervisor.pool())
