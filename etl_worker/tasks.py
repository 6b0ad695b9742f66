"""The worker's Celery app and its tasks. The partition task is thin: `pipeline.run_partition`
does the work; this module maps its outcome onto Celery (retry, defer, fail). The worker's
main process renews the leases, sweeps and records how pool processes died
(supervisor.py, installed here as a bootstep and the partition task's Request class). The
sweep task is the beat-scheduled form of the workers' own sweep (sweeper.py).

Start workers with `celery -A etl_worker worker` (the app is `etl_worker.app`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.signals import worker_process_init

from etl_worker import brokers, load, memory, pipeline, supervisor, sweeper
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
# The worker's main process renews its pool processes' leases and sweeps (supervisor.py).
app.steps["worker"].add(supervisor.step_for(settings))


@worker_process_init.connect
def _prepare_pool_process(**_: Any) -> None:
    memory.use_system_allocator()
    load.warm_up()


@app.task(
    name=TASK_NAME,
    bind=True,
    max_retries=None,
    # The main process hears how each attempt ended (a killed pool process, the hard time
    # limit) and records it before Celery acks or requeues the message.
    Request="etl_worker.supervisor:PartitionRequest",
)
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
            ctx,
            run_id,
            part_id,
            key,
            self.request.id or "",
            retries=self.request.retries,
            # The worker's main process renews the lease (supervisor.py): a thread here
            # would starve while a transform holds the GIL.
            renews_lease=False,
        )
    except RetryLater as later:
        log.info("partition %s: %s; again in %.1fs", key.label, later.detail, later.countdown)
        raise self.retry(countdown=brokers.retry_countdown(settings, later.countdown)) from None
    log.info("partition %s %s %s", key.label, outcome.status, outcome.detail)
    return {"status": outcome.status, "rows": outcome.stats.get("rows_written")}


# Acked on receipt: a sweep lost with its worker is simply the next scheduled one.
@app.task(name=SWEEP_TASK_NAME, bind=True, acks_late=False)
def sweep(self: Task) -> dict[str, Any]:
    """Re-enqueue stranded partitions of every run (the beat schedule sends this): the
    workers' own sweep, taking the same turn, so beat adds no second sweep per interval."""
    ctx = worker_context(settings)
    by = f"beat's etl.sweep on {self.request.hostname}"
    result = sweeper.take_turn_and_sweep(settings, ctx.pg, by=by, app=app)
    if result is None:
        return {"skipped": "another worker swept within ETL_SWEEP_INTERVAL"}
    return {"requeued": result.requeued, "checked": result.checked}
