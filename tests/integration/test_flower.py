"""Flower as part of the product: a real `celery -A etl_worker flower` beside real workers
sees a real run's tasks succeed, behind basic auth, with readable arguments."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from typing import Any

from etl_worker.celery_app import TASK_NAME
from tests.support.cli import IDENTITY, enqueue
from tests.support.data import make_raw_table
from tests.support.services import Flower, Stack, Worker, wait_until


def run_tasks(flower: Flower, run_id: str, state: str = "SUCCESS") -> dict[str, Any]:
    """The run's tasks that Flower's API reports in `state`, by task id."""
    reply = flower.get(f"/api/tasks?taskname={TASK_NAME}&state={state}&limit=1000")
    assert reply.status == 200, reply.body
    return {k: t for k, t in reply.json().items() if run_id in (t.get("kwargs") or "")}


def succeeded_events(metrics: str) -> int:
    """Sum of flower_events_total for the partition task's task-succeeded events."""
    total = 0.0
    for line in metrics.splitlines():
        if (
            line.startswith("flower_events_total{")
            and 'type="task-succeeded"' in line
            and f'task="{TASK_NAME}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def test_flower_sees_every_task_of_a_run_succeed_behind_basic_auth(
    stack: Stack,
    start_worker: Callable[..., Worker],
    start_flower: Callable[..., Flower],
) -> None:
    make_raw_table(stack.database_url, zips=4)  # 4 zips + NULL + '' = 6 partitions
    worker = start_worker(concurrency=2)
    flower = start_flower()
    worker_prefix = worker.name.split("@")[0] + "@"

    # The API refuses anyone without the password; the Prometheus endpoint needs none.
    assert flower.get("/api/workers", auth=False).status == 401
    assert flower.get("/api/tasks", auth=False).status == 401
    # /api/workers is filled by an inspect at Flower's start; refresh=1 asks the workers again
    # (over the broker, under the test's Redis key prefix).
    workers = wait_until(
        lambda: [
            name
            for name in flower.get("/api/workers?refresh=1").json()
            if name.startswith(worker_prefix)
        ],
        timeout=60,
        interval=1,
        what="flower to list the worker",
    )
    assert len(workers) == 1  # type: ignore[arg-type]

    result = enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY)
    run_id = result.stdout.splitlines()[0]

    # Events reach Flower asynchronously: wait for all six task-succeeded events.
    def all_six_succeeded() -> dict[str, Any] | None:
        found = run_tasks(flower, run_id)
        return found if len(found) == 6 else None

    tasks = wait_until(
        all_six_succeeded,
        timeout=60,
        interval=0.5,
        what="flower to see the run's 6 tasks succeed",
    )
    assert isinstance(tasks, dict)
    kwargs = [ast.literal_eval(t["kwargs"]) for t in tasks.values()]
    assert {k["zip"] for k in kwargs} == {None, "", "00000", "00001", "00002", "00003"}
    assert {k["run_id"] for k in kwargs} == {run_id}
    assert {t["name"] for t in tasks.values()} == {TASK_NAME}
    assert {t["worker"] for t in tasks.values()} == set(workers)  # type: ignore[arg-type]

    metrics = flower.get("/metrics", auth=False)
    assert metrics.status == 200
    assert succeeded_events(metrics.body) == 6

    # The tasks page (its table is filled from /tasks/datatable) shows each partition's
    # arguments as one readable line, formatted by etl_worker.ops.flower.format_task.
    table = flower.get(
        "/tasks/datatable?draw=1&start=0&length=50&search%5Bvalue%5D=&"
        "order%5B0%5D%5Bcolumn%5D=0&order%5B0%5D%5Bdir%5D=asc&columns%5B0%5D%5Bdata%5D=name"
    )
    assert table.status == 200, table.body
    shown = {row["kwargs"] for row in json.loads(table.body)["data"]}
    assert any(re.fullmatch(rf"zip 00002  part \d+  run {run_id}", line) for line in shown)
    assert any(line.startswith("zip NULL  part ") for line in shown)
