"""Backlog per worker arithmetic and what CloudWatch receives (through a stand-in client)."""

from __future__ import annotations

from typing import Any

import pytest

from etl_worker.errors import ServiceUnavailable
from etl_worker.ops.metrics import Backlog, CloudWatchSink, StdoutSink, worker_capacity


def test_backlog_per_worker_divides_queued_and_in_flight_by_processes() -> None:
    assert Backlog("etl", queued=90, in_flight=6, workers=2, processes=6).per_worker == 16.0


def test_with_no_worker_the_backlog_per_worker_is_the_whole_backlog() -> None:
    assert Backlog("etl", queued=40, in_flight=2, workers=0, processes=0).per_worker == 42.0


@pytest.mark.parametrize(
    ("stats", "capacity"),
    [
        ({"pool": {"max-concurrency": 8}}, 8),  # fixed -c 8
        ({"pool": {"max-concurrency": 1}, "autoscaler": {"max": 6, "limit": 3}}, 3),  # memory
        ({"pool": {"max-concurrency": 1}, "autoscaler": {"max": 6}}, 6),  # Celery's own
        ({}, 0),
    ],
)
def test_a_workers_capacity_is_its_autoscaler_limit_or_its_pool_size(
    stats: dict[str, Any], capacity: int
) -> None:
    assert worker_capacity(stats) == capacity


class FakeCloudWatch:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error = error

    def put_metric_data(self, **kwargs: Any) -> None:
        if self.error:
            raise self.error
        self.calls.append(kwargs)


def test_cloudwatch_gets_the_backlog_per_worker_and_its_parts_dimensioned_by_queue() -> None:
    client = FakeCloudWatch()

    CloudWatchSink("EtlWorker", client).publish(Backlog("etl", 30, 2, 1, 4))

    [call] = client.calls
    assert call["Namespace"] == "EtlWorker"
    values = {d["MetricName"]: d["Value"] for d in call["MetricData"]}
    assert values == {
        "BacklogPerWorker": 8.0,
        "QueuedMessages": 30.0,
        "InFlightMessages": 2.0,
        "WorkerProcesses": 4.0,
    }
    assert all(d["Dimensions"] == [{"Name": "Queue", "Value": "etl"}] for d in call["MetricData"])


def test_a_cloudwatch_failure_is_one_clear_error() -> None:
    sink = CloudWatchSink("EtlWorker", FakeCloudWatch(RuntimeError("AccessDenied\nmore")))

    with pytest.raises(ServiceUnavailable, match="PutMetricData to EtlWorker failed: AccessDenied"):
        sink.publish(Backlog("etl", 1, 0, 0, 0))


def test_stdout_gets_one_json_line_with_the_computed_value() -> None:
    lines: list[str] = []

    StdoutSink(lines.append).publish(Backlog("etl", 5, 1, 1, 2))

    assert lines == [
        '{"backlog_per_worker": 3.0, "in_flight": 1, "processes": 2, "queue": "etl", '
        '"queued": 5, "workers": 1}'
    ]
