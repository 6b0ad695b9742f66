"""The Celery app and its configuration, built from `Settings`.

Producer and workers build the app from the same settings, so they agree on the settings
that only work when every party shares them (the Redis visibility timeout: with several
values in play the shortest wins, per Celery's Redis caveats; RabbitMQ's queue arguments:
it refuses a declaration that differs). What depends on the broker is in brokers.py.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from etl_worker import brokers
from etl_worker.config import Settings

TASK_NAME = "etl.process_partition"
AUTOSCALER = "etl_worker.ops.autoscale:MemoryAwareAutoscaler"
#: The periodic sweep (sweeper.py), scheduled by `celery -A etl_worker beat`.
SWEEP_TASK_NAME = "etl.sweep"


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Redis' or RabbitMQ's transport options (brokers.py)."""
    return brokers.transport_options(settings)


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        **brokers.celery_options(settings),
        "broker_url": settings.broker_url,
        "broker_transport_options": broker_transport_options(settings),
        # Keep retrying the broker forever, at start-up too: a worker that starts before
        # Redis, or outlives a Redis restart, waits for it instead of exiting.
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # The audit table is the truth about partitions; a result backend would be a second,
        # weaker copy (and a Redis memory leak at 40,000 tasks a run).
        "task_ignore_result": True,
        "result_backend": None,
        # Ack after the task ran, not when it was received: a worker dying mid-partition
        # leaves the message to be redelivered. Tasks are idempotent (pipeline.py).
        "task_acks_late": True,
        # A pool process killed mid-task (OOM killer) requeues the message at once instead of
        # acking it as failed. Celery has no cap on these requeues: the audit table's attempt
        # count gives up after ETL_MAX_ATTEMPTS (pipeline.run_partition).
        "task_reject_on_worker_lost": True,
        # Failures and time-limit kills are acked: a failed partition is recorded in the audit
        # table and retried only by an explicit retry, the sweeper or --resume.
        "task_acks_on_failure_or_timeout": True,
        # One message per pool process (on Redis also none fetched while every process is
        # busy: brokers.celery_options).
        "worker_prefetch_multiplier": 1,
        # On broker connection loss Redis restores every unacked message, and RabbitMQ
        # returns them to the queue, including tasks still running; cancel those so the
        # redelivered copy is the only one.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Hard limit kills the pool process; the soft limit fires first so the task can roll
        # back and record why. Both below the visibility timeout (Settings checks it).
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": settings.soft_time_limit,
        # Payloads are JSON: a worker never unpickles what arrives from the broker.
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": settings.queue,
        # Task events on, so Flower sees every task with no extra worker flag. No
        # "task-sent" events: one per queued partition would double the cost of enqueueing
        # 40,000 tasks and fill Flower's memory before any work starts.
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        # With --autoscale, grow the pool with the backlog but never past what memory holds
        # for the largest partition measured so far (etl_worker/ops/autoscale.py).
        "worker_autoscaler": AUTOSCALER,
        # Replace a pool process that holds more than this after a task (Celery counts
        # KiB): pandas and Arrow do not always give freed memory back to the OS.
        "worker_max_memory_per_child": settings.max_memory_per_child_bytes // 1024 or None,
        # Optional (the workers sweep by themselves, supervisor.py): `celery -A etl_worker
        # beat` sends a sweep every ETL_SWEEP_INTERVAL seconds to a queue of its own, so it
        # never waits behind a long run's partitions; it takes the workers' turn, adding
        # no sweep. A sweep not started within one interval expires: the next is on its way.
        "beat_schedule": {
            "etl-sweep": {
                "task": SWEEP_TASK_NAME,
                "schedule": settings.sweep_interval,
                "options": {"queue": settings.sweep_queue, "expires": settings.sweep_interval},
            }
        },
    }


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.load()
    app = Celery("etl_worker", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
