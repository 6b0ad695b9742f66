"""The sweeper: find partitions that nothing will ever deliver again, and send them again.

A partition is stranded in one of two ways, each found from the audit table (the source of
truth; Celery's and Redis's own bookkeeping is not):

- **Its worker died mid-partition** (the node was terminated, its process group killed): the
  attempt's lease stops being renewed by its worker's main process and expires. This is the
  fast path, a dead node's partitions come back `ETL_LEASE_SECONDS` (+ one sweep interval)
  after its death.
  Redis would redeliver the message too, but only `visibility_timeout` after it was fetched,
  and only when some live worker runs kombu's restore. (A pool process killed alone needs no
  sweeper: its message is requeued at once by `task_reject_on_worker_lost` and the next
  delivery takes the dead process's lease over, see `pipeline._claim`.)
- **Its message vanished**: a Redis restart without persistence, a producer that died
  mid-send, a retry whose publish failed. The row says queued or retrying, but its task id is
  in no queue list and no unacked hash of the broker. (On RabbitMQ, which cannot be asked
  about one message: its queue holds no ready message at all, `brokers.missing_task_ids`.
  A RabbitMQ worker that dies gives its unacked messages back the moment its connection
  closes, so the lease path above is the one that finds a dead worker's partitions there.)

Timing order (Settings enforces it):

    task_time_limit  <  visibility_timeout  <  lost_message_after (ETL_SWEEP_AFTER)

A running task is killed before Redis would redeliver its message, so Redis never hands out
a second copy of a healthy task; and the sweeper calls a message lost only after Redis has
had its full visibility timeout to bring back whatever a dead node was holding, and long
after the short windows in which a live message is in neither place (buffered in a
producer's pipeline, popped by a worker but not yet recorded as unacked). Only rows with no
activity for that long are looked up at all.

Who sweeps: every worker's main process tries for the fleet's turn every
ETL_SWEEP_INTERVAL / 4, and about one per interval gets it (`take_turn_and_sweep`); the
beat-scheduled `etl.sweep` task takes the same turn. `etl-sweep` (an operator's, by hand or
`--watch`) and `etl-enqueue --wait` (its own run) sweep when asked, without a turn: a
sweep more is harmless, and an operator who asks for one gets it.

Either way the partition goes back to `queued` with a fresh task id (recorded in the audit
row with a requeue count and the reason) and is sent through `producer.send_tasks`, in the
transaction that changed the row: when the send fails, the row is left as it was for the
next sweep. A message that turns up later anyway (Redis restoring the dead node's copy)
finds the partition finished, or leased by the new attempt, and changes nothing. Being wrong
costs a duplicate delivery, never a duplicate row: that is pipeline.py's guarantee.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import psycopg
from celery import Celery

from etl_worker import brokers, migrations
from etl_worker.audit import Audit, QueuedPartition
from etl_worker.celery_app import make_app
from etl_worker.config import Settings
from etl_worker.db import connect, first_line
from etl_worker.errors import AuditSchemaMissing
from etl_worker.migrations import current_version
from etl_worker.partition import partition_label
from etl_worker.producer import run_queue, send_tasks

log = logging.getLogger(__name__)


@dataclass
class RunSweep:
    """What one sweep sent again for one run (partition labels)."""

    run_id: str
    expired: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    @property
    def requeued(self) -> int:
        return len(self.expired) + len(self.lost)


@dataclass
class SweepResult:
    runs: dict[str, RunSweep] = field(default_factory=dict)
    #: Waiting partitions old enough to be looked up in the broker.
    checked: int = 0
    lost_after: int = 0
    #: Where a lost message was looked for (brokers.LOST_WHERE).
    lost_where: str = brokers.LOST_WHERE[brokers.REDIS][0]

    @property
    def requeued(self) -> int:
        return sum(r.requeued for r in self.runs.values())

    def run(self, run_id: str) -> RunSweep:
        return self.runs.setdefault(run_id, RunSweep(run_id))

    def lines(self) -> list[str]:
        """One line per run and cause, for `etl-sweep` and the logs."""
        out = []
        for sweep in self.runs.values():
            for labels, why in (
                (sweep.expired, "whose lease expired (worker died)"),
                (sweep.lost, f"whose message was {self.lost_where} after {self.lost_after}s"),
            ):
                if labels:
                    shown = ", ".join(labels[:10]) + (" ..." if len(labels) > 10 else "")
                    out.append(
                        f"run {sweep.run_id}: re-enqueued {len(labels)} partition(s) {why}: "
                        + shown
                    )
        return out


def still_queued(app: Celery, settings: Settings, waiting: Mapping[str, set[str]]) -> set[str]:
    """Of the task ids waiting in each queue (queue name -> ids), those whose message the
    broker may still hold: `etl-enqueue --resume` sends those no second time. Redis answers
    per message; RabbitMQ per queue (brokers.missing_task_ids says why)."""
    if not any(waiting.values()):
        return set()
    missing = brokers.missing_task_ids(app, settings, waiting)
    return {t for ids in waiting.values() for t in ids if t not in missing}


def sweep(
    settings: Settings,
    conn: psycopg.Connection,
    *,
    run_id: str | None = None,
    app: Celery | None = None,
) -> SweepResult:
    """One sweep over `run_id` (default: every run in the database)."""
    app = app or make_app(settings)
    audit = Audit(conn, settings.audit_schema)
    after = settings.lost_message_after
    where = brokers.LOST_WHERE[brokers.broker_kind(settings.broker_url)]
    result = SweepResult(lost_after=after, lost_where=where[0])
    if current_version(conn, settings.audit_schema) is None:
        return result  # no audit schema: no run was ever enqueued in this database

    with conn.transaction():
        expired = audit.requeue_expired_leases(run_id)
        _send(settings, app, audit, expired, result, lost=False)

    candidates = audit.unsent_candidates(run_id, after)
    result.checked = len(candidates)
    if candidates:
        queues = {r: run_queue(audit.get_run(r), settings) for r in {c[0] for c in candidates}}
        waiting: dict[str, set[str]] = defaultdict(set)
        for run, _, task in candidates:
            waiting[queues[run]].add(task)
        missing = brokers.missing_task_ids(app, settings, waiting)
        lost = [(part, task) for _, part, task in candidates if task in missing]
        if lost:
            with conn.transaction():
                requeued = audit.requeue_lost(lost, after, where[1])
                _send(settings, app, audit, requeued, result, lost=True)
    for line in result.lines():
        log.info("%s", line)
    return result


def take_turn_and_sweep(
    settings: Settings, conn: psycopg.Connection, *, by: str, app: Celery | None = None
) -> SweepResult | None:
    """The fleet's sweep: every run, when nobody (no worker, no beat) swept in the last
    ETL_SWEEP_INTERVAL; None when it was not this caller's turn.

    The turn is one row (`sweep_state`), stamped by an UPDATE that matches only when the
    last sweep is old enough: concurrent callers serialize on the row, the second re-reads
    it stamped and matches nothing. Not a lock held while sweeping: a sweeper frozen or
    killed mid-sweep holds nothing, and the next turn comes one interval later (with an
    advisory lock, a frozen sweeper's session would stop the fleet's sweeping for as long
    as it stays frozen). A sweep that runs longer than an interval may overlap the next
    one, which is harmless: sweeps are safe to run at once."""
    try:
        turn = Audit(conn, settings.audit_schema).take_sweep_turn(by, settings.sweep_interval)
    except psycopg.errors.UndefinedTable:
        # No audit schema here yet (nothing to sweep), or one older than this code (say so).
        try:
            migrations.check_version(conn, settings.audit_schema, "worker's sweep")
        except AuditSchemaMissing:
            return None
        raise
    if not turn:
        return None
    started = time.monotonic()
    result = sweep(settings, conn, app=app)
    took = time.monotonic() - started
    if took > settings.sweep_interval:
        log.warning(
            "the sweep took %.1fs, longer than ETL_SWEEP_INTERVAL (%gs): the next one may "
            "overlap it",
            took,
            settings.sweep_interval,
        )
    return result


def _send(
    settings: Settings,
    app: Celery,
    audit: Audit,
    rows: Sequence[tuple[str, QueuedPartition]],
    result: SweepResult,
    *,
    lost: bool,
) -> None:
    by_run: dict[str, list[QueuedPartition]] = defaultdict(list)
    for run_id, part in rows:
        by_run[run_id].append(part)
    for run_id, parts in by_run.items():
        queue = run_queue(audit.get_run(run_id), settings)
        send_tasks(app, settings.replace(queue=queue), run_id, parts)
        labels = [partition_label(p.key, p.split_lo, p.split_hi) for p in parts]
        target = result.run(run_id)
        (target.lost if lost else target.expired).extend(labels)


class PeriodicSweep:
    """A sweep at most every `settings.sweep_interval` seconds, for loops that poll more
    often (`etl-enqueue --wait`, `etl-sweep --watch`). A failed sweep (broker or database
    away) is logged and tried again next time: the loop it runs in must outlive the blip."""

    def __init__(
        self,
        settings: Settings,
        run_id: str | None = None,
        *,
        app: Celery | None = None,
        report: Callable[[SweepResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self.run_id = run_id
        self.report = report
        self._app = app
        self._last = float("-inf")
        self._failing: str | None = None

    @property
    def app(self) -> Celery:
        if self._app is None:
            self._app = make_app(self.settings)
        return self._app

    def __call__(self) -> SweepResult | None:
        now = time.monotonic()
        if now - self._last < self.settings.sweep_interval:
            return None
        self._last = now
        try:
            url, timeout = self.settings.database_url, self.settings.network_timeout
            with connect(url, network_timeout=timeout) as conn:
                result = sweep(self.settings, conn, run_id=self.run_id, app=self.app)
        except Exception as exc:  # broker or database blip: the next sweep tries again
            # Said once, not once a sweep, while the same outage lasts.
            line = f"sweep failed (will retry): {first_line(exc)}"
            log.log(logging.DEBUG if line == self._failing else logging.WARNING, "%s", line)
            self._failing = line
            return None
        self._failing = None
        if self.report is not None:
            self.report(result)
        return result


def log_sweep(result: SweepResult) -> None:
    for line in result.lines():
        log.warning("%s", line)
