"""Backlog per worker: the number an EC2 Auto Scaling group tracks to size the fleet.

    backlog per worker = (messages waiting in the queue + messages delivered, not yet acked)
                         / pool processes of the live workers consuming the queue

Waiting messages are the queue's Redis list (LLEN); delivered ones sit in kombu's `unacked`
hash until their task ends (HLEN) — in-flight work, so a fleet busy on its last partitions
is not scaled in under them. The hash holds every queue's in-flight messages under the
Redis key prefix: give each fleet its own ETL_REDIS_KEY_PREFIX (or Redis database).
On RabbitMQ, waiting messages are the queue's ready count (a passive queue.declare, no
management plugin), and in-flight ones the tasks the live workers say they hold (`inspect
active` and `reserved`): a dead worker's unacked messages are back in the queue the moment
its connection closes, so no other consumer holds any (brokers.py).

Processes are counted from the workers' own replies (`inspect stats`): each worker's
autoscaler limit (the processes memory allows it, see autoscale.py) or its fixed pool size.
Capacity, not processes alive this second: an autoscaled pool that has not grown yet must
not look like a fleet that is too small. With no worker at all the metric is the whole
backlog, so a group at its minimum still sees work waiting.

Where the number goes is a `MetricSink`: stdout as JSON, or CloudWatch (boto3, the `aws`
extra). Tests read the computed `Backlog` and never call AWS.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from celery import Celery

from etl_worker import brokers
from etl_worker.config import Settings, redact_url
from etl_worker.db import first_line
from etl_worker.errors import ConfigError, ServiceUnavailable
from etl_worker.urls import broker_name

#: Seconds to wait for workers' replies to `inspect` broadcasts.
INSPECT_TIMEOUT = 2.0


@dataclass(frozen=True)
class Backlog:
    queue: str
    queued: int
    in_flight: int
    #: Live worker nodes consuming the queue.
    workers: int
    #: Pool processes those workers can run (their autoscaler limits or pool sizes).
    processes: int

    @property
    def per_worker(self) -> float:
        total = self.queued + self.in_flight
        return float(total) if self.processes == 0 else total / self.processes

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"backlog_per_worker": round(self.per_worker, 3)}


def worker_capacity(stats: Mapping[str, Any]) -> int:
    """Processes one worker can run, from its `inspect stats` reply."""
    autoscaler = stats.get("autoscaler") or {}
    if autoscaler:
        return int(autoscaler.get("limit", autoscaler.get("max", 0)))
    return int((stats.get("pool") or {}).get("max-concurrency", 0))


def read_backlog(app: Celery, settings: Settings, timeout: float = INSPECT_TIMEOUT) -> Backlog:
    """Measure the backlog of `settings.queue` now: two broker reads (Redis) or one
    (RabbitMQ), two broadcasts (four on RabbitMQ)."""
    try:
        queued, unacked = brokers.queue_lengths(app, settings)
    except Exception as exc:
        raise ServiceUnavailable(
            f"cannot read queue {settings.queue!r} at {redact_url(settings.broker_url)}: "
            f"{first_line(exc)} — check ETL_BROKER_URL and that "
            f"{broker_name(settings.broker_url)} is running"
        ) from exc
    inspect = app.control.inspect(timeout=timeout)
    consuming = {
        name
        for name, queues in (inspect.active_queues() or {}).items()
        if any(q.get("name") == settings.queue for q in queues or ())
    }
    stats = inspect.stats() or {}
    processes = sum(worker_capacity(stats[name]) for name in consuming if name in stats)
    in_flight = unacked
    if in_flight is None:
        held = [inspect.active() or {}, inspect.reserved() or {}]
        in_flight = sum(
            tasks_of(requests.get(name) or (), settings.queue)
            for requests in held
            for name in consuming
        )
    return Backlog(settings.queue, queued, in_flight, len(consuming), processes)


def tasks_of(requests: Iterable[Mapping[str, Any]], queue: str) -> int:
    """How many of a worker's `inspect active`/`reserved` requests came from `queue`."""
    return sum(1 for r in requests if (r.get("delivery_info") or {}).get("routing_key") == queue)


class MetricSink(Protocol):
    """Where a measured backlog is sent."""

    def publish(self, backlog: Backlog) -> None: ...


class StdoutSink:
    """One JSON object per measurement, on stdout (for logs, cron and tests)."""

    def __init__(self, echo: Any = print) -> None:
        self._echo = echo

    def publish(self, backlog: Backlog) -> None:
        self._echo(json.dumps(backlog.as_json(), sort_keys=True))


def metric_data(backlog: Backlog) -> list[dict[str, Any]]:
    """The CloudWatch datums for one measurement, dimensioned by queue."""
    dimensions = [{"Name": "Queue", "Value": backlog.queue}]
    values = {
        "BacklogPerWorker": backlog.per_worker,
        "QueuedMessages": backlog.queued,
        "InFlightMessages": backlog.in_flight,
        "WorkerProcesses": backlog.processes,
    }
    return [
        {"MetricName": name, "Dimensions": dimensions, "Value": float(value), "Unit": "Count"}
        for name, value in values.items()
    ]


class CloudWatchSink:
    """PutMetricData to CloudWatch. The client is boto3's unless one is given."""

    def __init__(self, namespace: str, client: Any = None) -> None:
        if client is None:
            try:
                import boto3
            except ImportError as exc:
                raise ConfigError(
                    "publishing to CloudWatch needs boto3 — pip install 'etl-worker[aws]'"
                ) from exc
            try:
                client = boto3.client("cloudwatch")
            except Exception as exc:  # botocore's NoRegionError and friends
                raise ConfigError(
                    f"cannot create a CloudWatch client: {first_line(exc)} "
                    "— set AWS_DEFAULT_REGION (and credentials, or an instance role)"
                ) from exc
        self.namespace = namespace
        self.client = client

    def publish(self, backlog: Backlog) -> None:
        try:
            self.client.put_metric_data(Namespace=self.namespace, MetricData=metric_data(backlog))
        except Exception as exc:  # botocore's ClientError, NoCredentialsError, ...
            raise ServiceUnavailable(
                f"CloudWatch PutMetricData to {self.namespace} failed: {first_line(exc)} "
                "— check the credentials and the cloudwatch:PutMetricData permission"
            ) from exc
