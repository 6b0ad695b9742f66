"""The worker's Celery app and its tasks. The partition task is thin: `pipeline.run_partition`
does the work; this module maps its outcome onto Celery (retry, defer, fail). The sweep task
is the periodic form of `etl-sweep` (sweeper.py).

Start workers with `celery -A etl_worker worker` (the app is `etl_worker.app`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.signals import worker_process_init

from etl_worker import memory, pipeline, sweeper
from etl_worker.celery_app import SWEEP_TASK_NAME, TASK_NAME, make_app
from etl_worker.config import Settings
from etl_worker.context import worker_context
from etl_worker.errors import RetryLater
from etl_worker.ops.flower import install_flower_defaults
from etl_worker.partition import PartitionKey

log = logging.getLogger(__name__)

settings = Settings.load()
app = make_app(settings)
# `celery -A etl_worker flower` loads this module too: give Flower our columns and task
# formatting (in a worker, where the celery command loads Flower's options as a plugin,
# they are set and never read). The one ops import the core may make (pyproject.toml).
install_flower_defaults()


@worker_process_init.connect
def _prepare_pool_process(**_: Any) -> None:
    memory.use_system_allocator()
    pipeline.warm_up()


@app.task(name=TASK_NAME, bind=True, max_retries=None)
def process_partition(
    self: Task,
    run_id: str,
    zip: str | None,
    part_id: int,
    split: list[int | None] | None = None,
) -> dict[str, Any]:
    """Process one partition (zip) of a run. Arguments are JSON: the run id, the partition
    value (None for the NULL partition), its audit row, and an optional [lo, hi) split."""
    ctx = worker_context(settings, worker_name=self.request.hostname)
    lo, hi = (split or [None, None])[:2]
    key = PartitionKey(zip, lo, hi)
    try:
        outcome = pipeline.run_partition(
            ctx, run_id, part_id, key, self.request.id or "", retries=self.request.retries
        )
    except RetryLater as later:
        log.info("partition %s: %s; again in %.1fs", key.label, later.detail, later.countdown)
        raise self.retry(countdown=later.countdown) from None
    log.info("partition %s %s %s", key.label, outcome.status, outcome.detail)
    return {"status": outcome.status, "rows": outcome.stats.get("rows_written")}


# Acked on receipt: a sweep lost with its worker is simply the next scheduled one.
@app.task(name=SWEEP_TASK_NAME, acks_late=False)
def sweep() -> dict[str, Any]:
    """Re-enqueue stranded partitions of every run (the beat schedule sends this)."""
    ctx = worker_context(settings)
    result = sweeper.sweep(settings, ctx.pg, app=app)
    return {"requeued": result.requeued, "checked": result.checked}
