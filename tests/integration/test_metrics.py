"""etl-metrics against real Redis and real workers: backlog per worker is queued plus
in-flight messages over the pool processes the live workers can run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.cli import enqueue, run_cli
from tests.support.data import count_partitions, make_raw_table
from tests.support.services import Stack, Worker, wait_until
from tests.support.transforms import WAIT_FOR_GATE


def metrics(stack: Stack) -> dict[str, Any]:
    out = run_cli("etl-metrics", env=stack.env, check=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def test_backlog_per_worker_is_queued_plus_in_flight_over_the_workers_pool_capacity(
    stack: Stack, start_worker: Callable[..., Worker], gate: Path
) -> None:
    make_raw_table(stack.database_url, zips=8, rows_per_zip=2)  # 10 partitions
    enqueue(stack, "--all-zips", "--transform", WAIT_FOR_GATE)

    idle = metrics(stack)

    # No worker at all: the whole backlog, so an Auto Scaling group at zero still scales out.
    assert idle == {
        "queue": stack.queue,
        "queued": 10,
        "in_flight": 0,
        "workers": 0,
        "processes": 0,
        "backlog_per_worker": 10.0,
    }

    start_worker(concurrency=2)
    # Autoscaled to at most 4, but memory allows one process: it counts as one.
    start_worker(
        extra_args=["--autoscale=4,1"], ETL_WORKER_MEMORY="300MiB", ETL_PROCESS_MEMORY="200MiB"
    )
    wait_until(lambda: count_partitions(stack.database_url, "started") == 3, 60)

    busy = metrics(stack)

    assert busy["queued"] == 7
    assert busy["in_flight"] == 3
    assert busy["workers"] == 2
    assert busy["processes"] == 3
    assert busy["backlog_per_worker"] == round(10 / 3, 3)
    gate.unlink()


def test_etl_metrics_says_in_one_line_when_redis_does_not_answer(stack: Stack) -> None:
    env = stack.env | {"ETL_BROKER_URL": "redis://127.0.0.1:1/0"}

    result = run_cli("etl-metrics", env=env, timeout=60)

    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot read queue")
    assert "check ETL_BROKER_URL" in result.stderr
    assert "Traceback" not in result.stderr
