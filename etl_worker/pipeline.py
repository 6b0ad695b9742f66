"""Run one partition: claim -> read -> transform -> cast -> (lock, checks, delete + COPY,
finished) in one transaction. Callable without Celery; `tasks.py` only maps its outcome onto
Celery.

Why each step is safe to repeat, and to race:
- the claim refuses partitions already done in this run (finished, failed, superseded,
  cancelled), partitions leased by a live attempt (a duplicate delivery waits for the lease
  instead of doing the work twice), and a message whose partition value or split is not
  its audit row's (refused, counted, nothing written). The worker then works on the
  partition its audit row names, never on the one the message names;
- the read records a fence token: the xmax of the snapshot it read in (`extract.fence_token`);
- the write (`begin_write`, one round trip) takes a transaction-level advisory lock on the
  target's oid and the partition value (NULL and '' tagged apart) — not the table's name,
  not the split — so every writer of a partition's rows queues there, whatever its run,
  split or name for the table; re-checks, holding the audit row, that this attempt still
  holds the partition (a stale attempt, or a cancelled partition, writes nothing); and
  discards a read older than one another run already wrote (the partition is marked
  `superseded` by that run). Then it deletes the partition's earlier rows, COPYs the new
  ones and marks it finished — all in one transaction, so a crash at any point leaves
  either the old rows or the new ones, each exactly once, and an audit row that says which;
- every other transition of an attempt (retrying, failed, lease ended) names its lease
  owner: an attempt whose lease lapsed and was taken over changes nothing, and says so.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
from psycopg import sql

from etl_worker import deaths, memory, retry, run_checks
from etl_worker.audit import lease_owner
from etl_worker.context import PreparedRun, RunGuards, WorkerContext
from etl_worker.db import first_line
from etl_worker.errors import (
    AttemptsExhausted,
    EtlError,
    MemoryCeilingExceeded,
    PermanentPartitionError,
    RetryLater,
    StatementTimedOut,
    TimeLimitExceeded,
    TransformError,
    TransientError,
    UnexpectedError,
    WorkerCannotServe,
    traceback_last_line,
)
from etl_worker.extract import predicate, select_sql, typed_value
from etl_worker.frames import frame_memory, to_frame
from etl_worker.load import check_partition_values, check_split_values, ingest, to_arrow
from etl_worker.partition import PartitionKey
from etl_worker.snapshot import read_in_snapshot, snapshot_statements
from etl_worker.transactions import adbc_run, explicit_transaction

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What happened to one delivery of a partition."""

    #: finished | skipped | superseded | refused (a retry or deferral raises RetryLater)
    status: str
    part_id: int
    detail: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


def run_partition(
    ctx: WorkerContext,
    run_id: str,
    part_id: int,
    key: PartitionKey,
    task_id: str,
    *,
    retries: int = 0,
    renews_lease: bool = True,
) -> Outcome:
    """Process one delivery of a partition (`retries`: how often this message was retried
    already; `task_id`: the Celery request id, "" without Celery). Raises `RetryLater` for
    a retry or a deferral, the `PermanentPartitionError` after recording `failed`; returns
    the outcome otherwise. `renews_lease=False`: the caller's worker main process renews
    the lease (supervisor.py), so no heartbeat thread runs here."""
    settings = ctx.settings
    owner = lease_owner(ctx.host, ctx.pid, task_id or uuid.uuid4().hex)
    try:
        guards = ctx.guards(run_id)
        claim = _claim(ctx, run_id, part_id, key, task_id, owner)
    except WorkerCannotServe as exc:
        # This worker's code does not fit the database or the run: no attempt is counted,
        # and the message comes back for a worker that fits (or this one, once upgraded).
        if not getattr(exc, "repeated", False):  # said once per run (context.guards)
            log.error("partition %s: %s", key.label, exc)
        raise RetryLater("refused (see above)", retry.backoff(retries, settings)) from exc
    except Exception as exc:
        ctx.reset_connections()
        error = retry.classify(exc)
        if isinstance(error, TransientError):
            # The database is unreachable, so nothing can be recorded and no attempt is
            # counted: back off (per message) until it answers again.
            raise RetryLater(str(error), retry.backoff(retries, settings)) from exc
        raise
    if claim is None:
        return Outcome("skipped", part_id, "no such partition in the audit table")
    if not claim.matches:
        # A hand-sent task, a bug, anyone with write access to the broker: the message
        # would rewrite another partition and mark this one done. Refused and counted on
        # the run (runs.refused_messages) by the claim itself.
        row = PartitionKey(claim.value, claim.split_lo, claim.split_hi).label
        detail = (
            f"refused: the message names partition {key.label} but audit row {part_id} of "
            f"run {run_id} is partition {row}; nothing written (counted in "
            "runs.refused_messages)"
        )
        log.error("message %s: %s", task_id or "-", detail)
        return Outcome("refused", part_id, detail)
    # From here on, the partition the audit row names (the message's agrees with it).
    key = PartitionKey(claim.value, claim.split_lo, claim.split_hi)
    if not claim.claimed:
        if claim.done:
            return Outcome("skipped", part_id, f"already {claim.state} in this run")
        if claim.leased_elsewhere:
            # Another delivery of this partition is running (Redis redelivered it, or a
            # broker reconnect restored it): come back when its lease would have lapsed.
            wait = float(claim.lease_left or 0) + 1.0
            raise RetryLater(f"leased by {claim.lease_owner}", wait)
        rows = _count_rows(ctx, run_id, key)
        cause, last = ctx.audit.last_death(part_id)
        error = AttemptsExhausted(
            deaths.attempts_exhausted_error(
                key.label,
                rows,
                claim.attempts,
                cause=cause,
                last=last,
                memory_ceiling=settings.memory_ceiling_bytes,
                run_id=run_id,
            )
        )
        dead = [o for o in [claim.lease_owner] if o and deaths.owner_is_dead_here(o, ctx.host)]
        if not ctx.audit.mark_exhausted(part_id, str(error), rows_read=rows, dead_owners=dead):
            log.warning("partition %s: out of attempts, but it moved on meanwhile", key.label)
            return Outcome("skipped", part_id, "out of attempts; the partition moved on")
        raise error

    heartbeat = ctx.heartbeat if renews_lease else None
    if heartbeat is not None:
        heartbeat.watch(part_id, owner)
    memory.reset_peak()
    rss_before = memory.current_rss()
    try:
        return _process(ctx, ctx.prepared(run_id), part_id, key, owner, guards)
    except Exception as exc:
        _record_failure(ctx, run_id, part_id, key, owner, claim.retries, exc)
        raise
    except BaseException:
        # Shutdown (SystemExit), or cancelled after the broker connection was lost: not the
        # partition's fault. End the lease now: a redelivered message starts at once, and
        # a message Redis keeps unacked until its visibility timeout is swept back sooner.
        if _safe(lambda: ctx.audit.expire_lease(part_id, owner)) is False:
            _stale(key, owner, "ending its lease")
        raise
    finally:
        if heartbeat is not None:
            heartbeat.unwatch()
        if memory.peak_rss() - rss_before > memory.RELEASE_AFTER_BYTES:
            memory.release_free_memory()


def _stale(key: PartitionKey, owner: str, what: str) -> None:
    log.warning(
        "partition %s: attempt %s no longer holds it (its lease lapsed and the partition "
        "moved on): %s changed nothing",
        key.label,
        owner,
        what,
    )


def _claim(
    ctx: WorkerContext, run_id: str, part_id: int, key: PartitionKey, task_id: str, owner: str
) -> Any:
    audit, settings = ctx.audit, ctx.settings
    kwargs = dict(
        value=key.value,
        split_lo=key.split_lo,
        split_hi=key.split_hi,
        task_id=task_id,
        worker=ctx.worker_name,
        owner=owner,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
    )
    claim = audit.claim(run_id, part_id, **kwargs)  # type: ignore[arg-type]
    if claim is not None and not claim.claimed and claim.leased_elsewhere:
        # The lease holder may be a process on this machine that was killed (OOM): its
        # message came straight back to us; take over now instead of waiting out the lease.
        if claim.lease_owner and deaths.owner_is_dead_here(claim.lease_owner, ctx.host):
            claim = audit.claim(run_id, part_id, dead_owners=[claim.lease_owner], **kwargs)  # type: ignore[arg-type]
            if claim is not None and not claim.claimed:
                # Still refused: out of attempts. A dead process's lease is no lease, so the
                # partition fails now rather than after the lease runs out.
                claim = dataclasses.replace(claim, lease_left=None)
    return claim


def _count_rows(ctx: WorkerContext, run_id: str, key: PartitionKey) -> int:
    run = ctx.prepared(run_id)
    where, params = predicate(key, run.partition_column, run.split_column)
    query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(run.raw.ident, where)
    row = ctx.pg.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def _record_failure(
    ctx: WorkerContext,
    run_id: str,
    part_id: int,
    key: PartitionKey,
    owner: str,
    retries: int,
    exc: BaseException,
) -> None:
    """Turn an exception into the audit row's next state; re-raising is the caller's job,
    except for transient errors, which become `RetryLater` while retries remain."""
    if isinstance(exc, RetryLater):
        return
    settings = ctx.settings
    error = _explain(ctx, run_id, key, retry.classify(exc))
    if isinstance(error, TransientError):
        ctx.reset_connections()
        if retry.should_retry(error, retries, settings):
            # Said at once: recording the retry may take a while when the database is away.
            log.warning("partition %s: transient error, will retry: %s", key.label, error)
            countdown = retry.backoff(retries, settings)
            # Recording the retry also gives the lease back, so the next delivery starts at
            # once instead of deferring to this attempt's lease. The database may be coming
            # back from a restart: try for a few seconds (unrecorded, the next delivery
            # waits out the lease, ETL_LEASE_SECONDS at most).
            note = f"{error} (retry in {countdown:.0f}s)"
            mark = lambda: ctx.audit.mark_retrying(part_id, owner, note)  # noqa: E731
            if _safe(mark, tries=5, reset=ctx) is False:
                _stale(key, owner, f"its retry after {error}")
            raise RetryLater(str(error), countdown) from exc
        error = PermanentPartitionError(
            f"partition {key.label}: still failing after {retries} retries: {error}"
        )
    message = str(error)
    # The whole traceback (causes chained) is kept for etl-report; `error` stays one line.
    detail = "".join(traceback.format_exception(exc))
    if _safe(lambda: ctx.audit.mark_failed(part_id, owner, message, traceback=detail)) is False:
        _stale(key, owner, f"its failure ({message})")
    else:
        log.error("partition %s failed: %s", key.label, message)
    if error is not exc:
        raise error from exc


def _explain(ctx: WorkerContext, run_id: str, key: PartitionKey, error: EtlError) -> EtlError:
    """The error in words that name the partition and say what to do."""
    settings = ctx.settings
    # A partition too big for a limit: what happened, and the two ways out.
    too_big = "partition {} {} — {}, or split big partitions".format
    if isinstance(error, TimeLimitExceeded):
        return TimeLimitExceeded(
            deaths.soft_time_limit_error(
                key.label, settings.soft_time_limit, settings.task_time_limit
            )
        )
    if isinstance(error, MemoryCeilingExceeded):
        rows = _safe(lambda: _count_rows(ctx, run_id, key))
        if isinstance(rows, int):
            ceiling = f"{settings.memory_ceiling_bytes:,} bytes (ETL_MEMORY_CEILING)"
            what = f"({rows:,} rows) is larger than the memory ceiling of {ceiling}"
            return MemoryCeilingExceeded(
                too_big(key.label, what, "raise the ceiling on bigger workers")
            )
    if isinstance(error, StatementTimedOut):
        limit = f"ETL_WRITE_TIMEOUT ({settings.write_timeout_seconds:g}s)"
        return StatementTimedOut(
            f"partition {key.label}: Postgres cancelled one of its statements ({error}); a "
            f"statement of its write may run, or wait for a lock, {limit} — raise it if its "
            "writes are that slow, or split big partitions"
        )
    if isinstance(error, UnexpectedError):
        # Not ours, not the database's: a bug. Record it rather than loop on it.
        return UnexpectedError(f"partition {key.label}: {error}")
    return error


def _safe(action: Any, *, tries: int = 1, reset: WorkerContext | None = None) -> Any:
    """Run an audit write that must not hide the error being reported; with `tries` > 1,
    try again after 0.5, 1, 2... s on a fresh connection (`reset`'s)."""
    for attempt in range(tries):
        try:
            return action()
        except Exception as exc:
            log.warning("audit write failed: %s", first_line(exc))
            if attempt + 1 < tries:
                if reset is not None:
                    reset.reset_connections()
                time.sleep(0.5 * 2**attempt)
    return None


@dataclass
class Transformed:
    """One partition read, transformed and cast to the target's types: everything the write
    needs, and what it cost. `memory_after_bytes` is `memory_before_bytes`: the output is
    not downcast (frames.py says why); the audit column stays for runs that were."""

    data: pa.Table
    rows_read: int
    #: The read's fence token (`extract.FENCE_TOKEN_SQL`).
    token: int
    read_seconds: float
    transform_seconds: float
    memory_before_bytes: int
    memory_after_bytes: int


def transform_partition(
    ctx: WorkerContext, run: PreparedRun, key: PartitionKey, snapshot_id: str | None = None
) -> Transformed:
    """Read one partition (in the exported snapshot `snapshot_id`, when the run has one),
    run the transform on it and cast its output to the target's
    Arrow types. Writes nothing (etl-plan measures partitions with it)."""
    started = time.perf_counter()
    where, params = predicate(key, run.partition_column, run.split_column)
    table, token = read_in_snapshot(
        ctx.adbc,
        ctx.audit.bind(select_sql(run.raw, where), params),  # psycopg binds, ADBC runs
        run.raw_columns,
        snapshot=snapshot_statements(ctx.audit.bind, snapshot_id),
        run_id=run.spec.run_id,
        ceiling_bytes=ctx.settings.memory_ceiling_bytes,
        label=key.label,
    )
    rows_read = table.num_rows
    expected = typed_value(ctx.adbc, ctx.audit.bind, table, run.partition_column, key)
    frame = to_frame(table)
    del table
    read_done = time.perf_counter()

    try:
        result = run.transform(frame)
    except Exception as exc:
        if retry.is_soft_time_limit(exc):
            raise  # the task's time limit, not the transform's failure: reported as such
        raise TransformError(
            f"transform {run.spec.transform} failed on partition {key.label}: "
            f"{traceback_last_line(exc)}"
        ) from exc
    if not isinstance(result, pd.DataFrame):
        raise TransformError(
            f"transform {run.spec.transform} returned {type(result).__name__} for partition "
            f"{key.label}, not a DataFrame"
        )
    del frame
    # Not downcast before the write: it costs time and lowers no peak (frames.py).
    memory_before = frame_memory(result)
    data = to_arrow(result, run.target_schema)
    del result
    check_partition_values(data, run.spec.partition_column, expected, key.label)
    check_split_values(data, run.split_column, key.split_lo, key.split_hi, key.label)
    return Transformed(
        data=data,
        rows_read=rows_read,
        token=token,
        read_seconds=read_done - started,
        transform_seconds=time.perf_counter() - read_done,
        memory_before_bytes=memory_before,
        memory_after_bytes=memory_before,
    )


def _process(
    ctx: WorkerContext,
    run: PreparedRun,
    part_id: int,
    key: PartitionKey,
    owner: str,
    guards: RunGuards,
) -> Outcome:
    audit = ctx.audit
    started = time.perf_counter()
    part = transform_partition(ctx, run, key, guards.snapshot_id)
    where, params = predicate(key, run.partition_column, run.split_column)
    # The run's contract (if any): raises ContractViolation, or splits off rows to quarantine.
    checked = run_checks.enforce_contract(ctx, run, part_id, key, part.data)
    bind = audit.bind
    write_started = time.perf_counter()

    # NULL and '' are different partitions: tag the value so they lock and fence apart.
    tagged = "n" if key.value is None else "v" + key.value
    with explicit_transaction(ctx.adbc) as cur:
        # Bound how long this transaction can hold its locks if this process freezes
        # (SIGSTOP, a paused VM) or waits: Postgres ends it (docs/reliability.md). Sent
        # with the BEGIN, in one round trip (transactions.explicit_transaction).
        limits = ctx.settings.write_timeout_seconds, ctx.settings.lease_seconds
        adbc_run(cur, "BEGIN; " + audit.write_timeouts_sql(*limits))
        # Lock (target oid, value), check that this attempt still holds the partition and
        # that no other run wrote a newer read of it: one round trip (migration 4).
        cur.execute(audit.begin_write_sql(part_id, owner, run.target_oid, tagged, part.token))
        verdict, detail = cur.fetchone()
        if verdict == "superseded":
            adbc_run(cur, "COMMIT")  # the row now says superseded, and by which run
            log.warning(
                "partition %s: run %s wrote a newer read of it first; this read is discarded",
                key.label,
                detail,
            )
            return Outcome("superseded", part_id, f"by run {detail}")
        if verdict != "write":
            adbc_run(cur, "ROLLBACK")
            if not detail.startswith(("finished", "cancelled", "superseded")):
                _stale(key, owner, "its write")
            return Outcome("skipped", part_id, f"not written: the partition is {detail}")
        rows_written = 0
        if not run.spec.dry_run:
            delete = sql.SQL("DELETE FROM {} WHERE {}").format(run.target.ident, where)
            adbc_run(cur, bind(delete, params))
            rows_written = ingest(cur, run.target, checked.valid)
            run_checks.write_quarantine(cur, ctx, run, where, params, checked)
        finished = time.perf_counter()
        stats = {
            "rows_read": part.rows_read,
            "rows_written": rows_written,
            "read_seconds": part.read_seconds,
            "transform_seconds": part.transform_seconds,
            "write_seconds": finished - write_started,
            "duration_seconds": finished - started,
            "memory_before_bytes": part.memory_before_bytes,
            "memory_after_bytes": part.memory_after_bytes,
            "peak_rss_bytes": memory.peak_rss(),
        }
        # The fingerprints, the contract's outcome and `finished` commit with the rows; the
        # COMMIT goes in the same round trip. `finished` needs no check of its own:
        # begin_write holds the audit row (FOR UPDATE) for this attempt until the COMMIT.
        statements = (
            audit.partition_fingerprint_sql(part_id, guards.fingerprint),
            audit.finished_sql(part_id, owner, stats),
            run_checks.finished_extras_sql(ctx, run, part_id, checked),
            "COMMIT",
        )
        adbc_run(cur, ";\n".join(s.rstrip().rstrip(";") for s in statements))
    return Outcome("finished", part_id, stats=stats)
