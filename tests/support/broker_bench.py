"""Enqueue speed on each broker: the seconds `producer.send_tasks` takes to publish N task
messages (what `etl-enqueue` does once its partitions are recorded), on the machine's Redis
(a key prefix of its own) and RabbitMQ (a virtual host of its own, with publisher confirms
and a quorum queue), both removed after.

    python -m tests.support.broker_bench [--tasks 40000] [--repeat 3]

Prints a Markdown table for docs/reliability.md and the README: best and median of the
repeats, and messages per second from the best.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from etl_worker.audit import QueuedPartition
from etl_worker.bench.fleet import delete_redis_prefix
from etl_worker.celery_app import make_app
from etl_worker.config import Settings
from etl_worker.producer import send_tasks
from tests.support import rabbit
from tests.support.services import BASE_BROKER_URL


@contextmanager
def redis_settings() -> Iterator[Settings]:
    prefix = f"etl-brokerbench-{uuid.uuid4().hex[:8]}:"
    try:
        yield Settings.load({}, broker_url=BASE_BROKER_URL, redis_key_prefix=prefix)
    finally:
        delete_redis_prefix(BASE_BROKER_URL, prefix)


@contextmanager
def rabbit_settings() -> Iterator[Settings]:
    vhost = rabbit.Vhost()
    try:
        yield Settings.load({}, broker_url=vhost.url)
    finally:
        vhost.delete()


def publish_seconds(make: Callable[[], object], tasks: int) -> float:
    """One publish of `tasks` messages into a fresh namespace (then removed)."""
    with make() as settings:  # type: ignore[attr-defined]
        settings = settings.replace(queue="etl-bench")
        app = make_app(settings)
        parts = [QueuedPartition(i, f"{i:05d}", str(uuid.uuid4())) for i in range(tasks)]
        send_tasks(app, settings, "bench", parts[:10])  # connect, declare: not timed
        return send_tasks(app, settings, "bench", parts)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    brokers = {
        "Redis (kombu pipeline, 1,000 per round trip)": redis_settings,
        "RabbitMQ (quorum queue, publisher confirms, 1,000 in flight)": rabbit_settings,
    }
    print(f"| broker | publish {args.tasks:,} tasks, best | median of {args.repeat} | msg/s |")
    print("|---|---|---|---|")
    for name, make in brokers.items():
        runs = [publish_seconds(make, args.tasks) for _ in range(args.repeat)]
        best = min(runs)
        print(
            f"| {name} | {best:.2f} s | {statistics.median(runs):.2f} s "
            f"| {args.tasks / best:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
