"""The audit table: runs, partitions, and the partition state machine. The only writer of
audit rows.

    queued -> started -> finished
                      -> retrying -> started ...   (transient error, retried with backoff)
                      -> failed                    (permanent error, or out of attempts)
                      -> superseded                (another run's newer read was written
                                                    first: this older read is discarded)
    queued/started/retrying --(etl-enqueue --cancel)--> cancelled (--resume sends it again)
    started  --(lease expired: the worker died)-------> queued again by the sweeper
    queued/retrying --(message lost from Redis)-------> queued again by the sweeper
    started  --(pool process killed at the hard time limit)--> failed, by its worker's
                                                              main process
    started  --(pool process died: OOM, a signal)-----> started, the death recorded for the
                                                        next delivery to take over

`finished` is written in the same transaction as the partition's rows (see pipeline.py), so
the audit never claims rows that are not there, and rows are never there unaccounted for.
Every transition an attempt makes names its lease owner: an attempt whose lease lapsed and
was taken over changes nothing (the methods return False, the caller logs it).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from etl_worker import migrations
from etl_worker.errors import RunNotFound
from etl_worker.queries import query

#: How a worker names itself in an audit-schema version error.
_WORKER = "worker"


def lease_owner(host: str, pid: int, task_id: str) -> str:
    """Who holds an attempt's lease: `host:pid:task_id` (the Celery request id). The pool
    process that runs the attempt and its worker's main process, which renews the lease
    (supervisor.py), both build it here; `pipeline` reads host and pid back out of it."""
    return f"{host}:{pid}:{task_id}"


class State(enum.StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    RETRYING = "retrying"
    FINISHED = "finished"
    FAILED = "failed"
    #: Not written: another run's newer read of the same partition was written first.
    SUPERSEDED = "superseded"
    #: Cancelled with its run (etl-enqueue --cancel); --resume sends it again.
    CANCELLED = "cancelled"


#: States a partition leaves only through --resume: its run is over for it.
TERMINAL = frozenset({State.FINISHED, State.FAILED, State.SUPERSEDED, State.CANCELLED})
#: States of a partition still to be done: a run with one is unfinished.
UNFINISHED = frozenset({State.QUEUED, State.STARTED, State.RETRYING})


class RunMode(enum.StrEnum):
    NORMAL = "normal"
    #: Read and transform, write nothing (etl-enqueue --dry-run).
    DRY_RUN = "dry_run"
    #: A sample table into a test target, compared with a truth table (etl-enqueue --test).
    TEST = "test"


@dataclass(frozen=True)
class RunSpec:
    """What a run processes: everything a worker needs besides the partition key."""

    run_id: str
    raw_table: str
    target_table: str
    partition_column: str
    transform: str
    mode: str = RunMode.NORMAL
    options: dict[str, Any] = field(default_factory=dict)
    #: The transform's fingerprint when enqueued (fingerprint.py); None: not checked.
    transform_fingerprint: str | None = None
    #: The exported snapshot every partition reads (--snapshot); None: the table as it is.
    snapshot_id: str | None = None

    @property
    def dry_run(self) -> bool:
        return self.mode == RunMode.DRY_RUN


@dataclass(frozen=True)
class QueuedPartition:
    part_id: int
    key: str | None
    task_id: str
    #: The split column's range [lo, hi) when this task is part of a split partition.
    split_lo: int | None = None
    split_hi: int | None = None

    @property
    def split(self) -> list[int | None] | None:
        """The task's `split` argument: [lo, hi], or None for a whole partition."""
        if self.split_lo is None and self.split_hi is None:
            return None
        return [self.split_lo, self.split_hi]


@dataclass(frozen=True)
class Claim:
    """The outcome of trying to start an attempt on a partition."""

    claimed: bool
    state: str
    attempts: int
    retries: int
    lease_owner: str | None
    lease_left: float | None
    #: The partition as its audit row names it (what the worker works on).
    value: str | None = None
    split_lo: int | None = None
    split_hi: int | None = None
    #: False: the message named another value or split than the row (refused, counted).
    matches: bool = True

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    @property
    def leased_elsewhere(self) -> bool:
        return self.lease_left is not None and self.lease_left > 0


class Audit:
    """Audit rows for one database and audit schema, over a psycopg autocommit connection."""

    def __init__(self, conn: psycopg.Connection, schema: str) -> None:
        self.conn = conn
        self.schema = schema

    def _q(self, name: str) -> sql.Composed:
        return query(name, self.schema)

    def require_schema(self) -> Audit:
        """This audit, once it is known to exist (`AuditSchemaMissing` otherwise): readers
        on a fresh database get one line saying what to run, not an UndefinedTable."""
        migrations.require_schema(self.conn, self.schema)
        return self

    def ensure_schema(self) -> list[migrations.Migration]:
        """Bring the audit schema to this code's version; returns the migrations applied."""
        return migrations.migrate(self.conn, self.schema)

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, spec: RunSpec, target_oid: int | None = None) -> None:
        self.conn.execute(
            self._q("insert_run"),
            {
                "run_id": spec.run_id,
                "raw_table": spec.raw_table,
                "target_table": spec.target_table,
                "partition_column": spec.partition_column,
                "transform": spec.transform,
                "mode": str(spec.mode),
                "options": Jsonb(spec.options),
                "transform_fingerprint": spec.transform_fingerprint,
                "snapshot_id": spec.snapshot_id,
                "target_oid": target_oid,
            },
        )

    def get_run(self, run_id: str) -> RunSpec:
        try:
            row = self.conn.execute(self._q("get_run"), {"run_id": run_id}).fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        if row is None:
            raise RunNotFound(
                f"run {run_id!r} not found in the audit table {self.schema}.runs "
                "— check the run id and ETL_DATABASE_URL"
            )
        options = row[6] if isinstance(row[6], dict) else json.loads(row[6] or "{}")
        return RunSpec(row[0], row[1], row[2], row[3], row[4], row[5], options, row[7], row[8])

    def latest_run_id(self) -> str | None:
        row = self.conn.execute(self._q("latest_run")).fetchone()
        return None if row is None else str(row[0])

    def mark_run_enqueued(self, run_id: str) -> None:
        self.conn.execute(self._q("mark_run_enqueued"), {"run_id": run_id})

    # -- partitions: producer side ---------------------------------------------------------

    def add_partitions(
        self,
        run_id: str,
        keys: Sequence[str | None],
        splits: Sequence[tuple[int | None, int | None]] | None = None,
    ) -> list[QueuedPartition]:
        los = [s[0] for s in splits] if splits else [None] * len(keys)
        his = [s[1] for s in splits] if splits else [None] * len(keys)
        rows = self.conn.execute(
            self._q("insert_partitions"),
            {"run_id": run_id, "keys": list(keys), "los": los, "his": his},
        ).fetchall()
        return [QueuedPartition(*r) for r in rows]

    def requeue_unfinished(
        self, run_id: str, part_ids: Sequence[int] | None = None
    ) -> list[QueuedPartition]:
        rows = self.conn.execute(
            self._q("requeue_unfinished"),
            {"run_id": run_id, "part_ids": None if part_ids is None else list(part_ids)},
        ).fetchall()
        return [QueuedPartition(*r) for r in rows]

    def resume_candidates(self, run_id: str) -> list[tuple[int, str, str, bool]]:
        """(part id, state, task id, lease still live) of the run's unfinished partitions."""
        rows = self.conn.execute(self._q("resume_candidates"), {"run_id": run_id}).fetchall()
        return [(int(r[0]), str(r[1]), str(r[2]), bool(r[3])) for r in rows]

    # -- partitions: sweeper side ----------------------------------------------------------

    def requeue_expired_leases(self, run_id: str | None) -> list[tuple[str, QueuedPartition]]:
        """Started partitions whose lease expired go back to queued with a new task id.
        Returns (run id, partition) pairs to send; call inside the transaction that sends."""
        rows = self.conn.execute(self._q("requeue_expired_leases"), {"run_id": run_id})
        return [(r[0], QueuedPartition(*r[1:])) for r in rows.fetchall()]

    def unsent_candidates(self, run_id: str | None, after: float) -> list[tuple[str, int, str]]:
        """(run id, part id, task id) of queued/retrying partitions last sent over `after`
        seconds ago: the ones whose message the sweeper looks for in Redis."""
        rows = self.conn.execute(self._q("unsent_candidates"), {"run_id": run_id, "after": after})
        return [(r[0], r[1], r[2]) for r in rows.fetchall()]

    def requeue_lost(
        self,
        lost: Sequence[tuple[int, str]],
        after: float,
        where: str = "in no Redis queue nor unacked set",
    ) -> list[tuple[str, QueuedPartition]]:
        """Re-send (part id, task id) pairs whose message is gone, unless the row moved on.
        `where` says where it was looked for, for the requeue reason."""
        rows = self.conn.execute(
            self._q("requeue_lost_messages"),
            {
                "part_ids": [p for p, _ in lost],
                "task_ids": [t for _, t in lost],
                "after": after,
                "where": where,
            },
        )
        return [(r[0], QueuedPartition(*r[1:])) for r in rows.fetchall()]

    # -- partitions: worker side -----------------------------------------------------------

    def claim(
        self,
        run_id: str,
        part_id: int,
        *,
        value: str | None,
        split_lo: int | None,
        split_hi: int | None,
        task_id: str,
        worker: str,
        owner: str,
        lease_seconds: float,
        max_attempts: int,
        dead_owners: Sequence[str] = (),
    ) -> Claim | None:
        params = {
            "run_id": run_id,
            "part_id": part_id,
            "task_id": task_id,
            "worker": worker,
            "owner": owner,
            "lease_seconds": lease_seconds,
            "max_attempts": max_attempts,
            "dead_owners": list(dead_owners),
            "schema_version": migrations.code_version(),
            "part_key": value,
            "split_lo": split_lo,
            "split_hi": split_hi,
        }
        try:
            row = self.conn.execute(self._q("claim_partition"), params).fetchone()
        except psycopg.errors.UndefinedTable:
            # No version table: an audit schema from before numbered migrations, or none.
            migrations.check_version(self.conn, self.schema, _WORKER)
            raise
        if row is None:
            return None
        state, attempts, retries, lease_owner, lease_left, claimed_attempts, version = row[:7]
        matches, key, lo, hi = row[7:]
        migrations.require_version(version or 0, self.schema, _WORKER)
        if claimed_attempts is not None:
            return Claim(
                True, State.STARTED, claimed_attempts, retries, owner, lease_seconds, key, lo, hi
            )
        return Claim(
            False,
            state,
            attempts,
            retries,
            lease_owner,
            None if lease_left is None else float(lease_left),
            key,
            lo,
            hi,
            matches=bool(matches),
        )

    def renew_lease(self, part_id: int, owner: str, lease_seconds: float) -> bool:
        """False when `owner` no longer holds a live lease on the partition."""
        cur = self.conn.execute(
            self._q("renew_lease"),
            {"part_id": part_id, "owner": owner, "lease_seconds": lease_seconds},
        )
        return cur.rowcount == 1

    def renew_leases(self, leases: Sequence[tuple[int, str]], lease_seconds: float) -> set[str]:
        """Renew many (part id, owner) leases in one statement; returns the owners renewed."""
        rows = self.conn.execute(
            self._q("renew_leases"),
            {
                "part_ids": [p for p, _ in leases],
                "owners": [o for _, o in leases],
                "lease_seconds": lease_seconds,
            },
        ).fetchall()
        return {r[0] for r in rows}

    def record_death(
        self, part_id: int, owner: str, cause: str, error: str, *, final: bool
    ) -> bool:
        """How an attempt's pool process died, recorded while the attempt holds the lease:
        `final` fails the partition; otherwise the row only learns how the attempt died.
        False when the attempt no longer held the lease (nothing changed)."""
        name = "fail_dead_attempt" if final else "record_death"
        params = {"part_id": part_id, "owner": owner, "cause": cause, "error": error}
        return self.conn.execute(self._q(name), params).fetchone() is not None

    def last_death(self, part_id: int) -> tuple[str | None, str | None]:
        """(cause, words) of the last death recorded for the partition's attempts."""
        row = self.conn.execute(self._q("last_death"), {"part_id": part_id}).fetchone()
        return (None, None) if row is None else (row[0], row[1])

    def _owned(self, name: str, params: dict[str, Any]) -> bool:
        return self.conn.execute(self._q(name), params).fetchone() is not None

    def mark_retrying(self, part_id: int, owner: str, error: str) -> bool:
        """False (nothing changed) when `owner` no longer holds the partition."""
        return self._owned("mark_retrying", {"part_id": part_id, "owner": owner, "error": error})

    def mark_failed(
        self,
        part_id: int,
        owner: str,
        error: str,
        rows_read: int | None = None,
        traceback: str | None = None,
    ) -> bool:
        """`error`: the one line shown and grouped; `traceback`: the whole of it, kept.
        False (nothing changed) when `owner` no longer holds the partition."""
        params = {"part_id": part_id, "owner": owner, "error": error, "rows_read": rows_read}
        return self._owned("mark_failed", params | {"traceback": traceback})

    def mark_exhausted(
        self,
        part_id: int,
        error: str,
        rows_read: int | None = None,
        dead_owners: Sequence[str] = (),
    ) -> bool:
        """Fail a partition out of attempts, unless a live attempt holds it (False)."""
        params = {
            "part_id": part_id,
            "error": error,
            "rows_read": rows_read,
            "dead_owners": list(dead_owners),
        }
        return self._owned("mark_exhausted", params)

    def expire_lease(self, part_id: int, owner: str) -> bool:
        """End an attempt that has no outcome: the partition is free to claim (or sweep).
        False when `owner` no longer held it."""
        return self._owned("expire_lease", {"part_id": part_id, "owner": owner})

    def begin_write_sql(
        self,
        part_id: int,
        owner: str,
        target_oid: int | None,
        part_value: str,
        token: int | None,
    ) -> str:
        """The write transaction's lock, ownership and fence checks (`begin_write` in
        migration 4), bound, for the ADBC connection: returns (verdict, detail)."""
        params = {
            "part_id": part_id,
            "owner": owner,
            "target_oid": target_oid,
            "part_value": part_value,
            "token": token,
        }
        return self.bind(self._q("begin_write"), params)

    def finished_sql(self, part_id: int, owner: str, stats: dict[str, Any]) -> str:
        """The `mark_finished` statement with its values bound, to run inside the data
        transaction on the ADBC connection (so `finished` commits with the rows). Returns
        the part id, or no row if `owner` no longer held the partition."""
        return self.bind(self._q("mark_finished"), {"part_id": part_id, "owner": owner, **stats})

    def write_timeouts_sql(self, statement_seconds: float, idle_seconds: float) -> str:
        """The write transaction's first statement: Postgres ends the transaction (freeing
        its locks) when one of its statements, or a wait for a lock, runs past
        `statement_seconds`, or it sits idle between statements past `idle_seconds`."""
        params = {
            "statement_ms": str(int(statement_seconds * 1000)),
            "idle_ms": str(int(idle_seconds * 1000)),
        }
        return self.bind(self._q("bound_write_transaction"), params)

    def bind(self, statement: sql.Composed | sql.SQL, params: dict[str, Any]) -> str:
        # psycopg's own client-side parameter binding (the values are adapted and quoted by
        # the driver, never formatted by us), for the statements that run on ADBC.
        return psycopg.ClientCursor(self.conn).mogrify(statement, params)

    # -- the fleet's sweep ------------------------------------------------------------------

    def take_sweep_turn(self, by: str, every: float) -> bool:
        """True (and the turn stamped with `by`) when nobody swept in the last `every`
        seconds: at most one of the fleet's sweepers gets each turn."""
        params = {"by": by, "every": every}
        return self.conn.execute(self._q("take_sweep_turn"), params).fetchone() is not None

    # -- reading ---------------------------------------------------------------------------

    def ping(self) -> None:
        """A round trip: the database answers (a worker's health check)."""
        self.conn.execute(self._q("ping")).fetchone()

    def partitions(self, run_id: str) -> list[dict[str, Any]]:
        cur = self.conn.execute(self._q("run_partitions"), {"run_id": run_id})
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def counts(self, run_id: str) -> dict[str, tuple[int, int, int]]:
        """state -> (partitions, rows read, rows written)."""
        rows = self.conn.execute(self._q("run_counts"), {"run_id": run_id}).fetchall()
        return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}

    def timing(self, run_id: str) -> tuple[Any, ...]:
        """(first start, last finish, now, busy seconds, peak RSS, memory before, after,
        largest frame)."""
        row = self.conn.execute(self._q("run_timing"), {"run_id": run_id}).fetchone()
        assert row is not None  # an aggregate always returns a row
        return tuple(row)

    def working_seconds(self, run_id: str, gap: float) -> float:
        """Seconds the run's partitions were worked on (idle gaps over `gap` left out)."""
        params = {"run_id": run_id, "gap": gap}
        row = self.conn.execute(self._q("run_working_seconds"), params).fetchone()
        return float(row[0]) if row and row[0] is not None else 0.0

    def recent_runs(self, limit: int) -> list[tuple[Any, ...]]:
        """(run id, raw, target, transform, mode, created, partitions, finished, failed,
        started, rows written) of the latest `limit` runs, newest first."""
        return [tuple(r) for r in self.conn.execute(self._q("recent_runs"), {"limit": limit})]

    def superseded(self, run_id: str) -> dict[str, list[tuple[Any, ...]]]:
        """Superseding run id -> (value, split lo, split hi) of the partitions it replaced."""
        rows = self.conn.execute(self._q("run_superseded"), {"run_id": run_id}).fetchall()
        return {str(r[0]): list(zip(r[1], r[2], r[3], strict=True)) for r in rows}

    def refused_messages(self, run_id: str) -> int:
        row = self.conn.execute(self._q("run_refused_messages"), {"run_id": run_id}).fetchone()
        return 0 if row is None else int(row[0])

    def failures(self, run_id: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(self._q("run_failures"), {"run_id": run_id})]

    def recent_peak_rss(self, runs: int = 3) -> int | None:
        """The largest per-process peak memory of the last `runs` runs (None: nothing
        measured yet, or no audit schema in this database)."""
        try:
            row = self.conn.execute(self._q("recent_peak_rss"), {"runs": runs}).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
        return None if row is None or row[0] is None else int(row[0])

    def slowest(self, run_id: str, limit: int = 5) -> list[tuple[Any, ...]]:
        rows = self.conn.execute(self._q("run_slowest"), {"run_id": run_id, "limit": limit})
        return [tuple(r) for r in rows]

    # -- which code a run wants, which snapshot it reads (fingerprint.py, snapshot.py) ------

    def run_guards(self, run_id: str) -> tuple[str | None, str | None] | None:
        """(transform fingerprint, snapshot id) the run wants now; None: no such run."""
        try:
            row = self.conn.execute(self._q("run_guards"), {"run_id": run_id}).fetchone()
        except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable):
            # An audit schema older than this code (or none): say so as the claim would.
            migrations.check_version(self.conn, self.schema, _WORKER)
            raise
        return None if row is None else (row[0], row[1])

    def resume_run_guards(self, run_id: str, fingerprint: str | None) -> None:
        """--resume: want the transform as loaded now; read without the old snapshot."""
        params = {"run_id": run_id, "fingerprint": fingerprint}
        self.conn.execute(self._q("resume_run_guards"), params)

    def record_refusal(
        self, run_id: str, worker: str, loaded: str | None, wanted: str | None, reason: str
    ) -> None:
        params = dict(run_id=run_id, worker=worker, loaded=loaded, wanted=wanted, reason=reason)
        self.conn.execute(self._q("record_refusal"), params)

    def clear_refusal(self, run_id: str, worker: str) -> None:
        self.conn.execute(self._q("clear_refusal"), {"run_id": run_id, "worker": worker})

    def refusals(self, run_id: str) -> list[tuple[Any, ...]]:
        """(worker, loaded, wanted, reason, refused at) of workers refusing the run."""
        rows = self.conn.execute(self._q("run_refusals"), {"run_id": run_id})
        return [tuple(r) for r in rows]

    def partition_fingerprint_sql(self, part_id: int, fingerprint: str | None) -> str:
        """Bound, for the write transaction on ADBC (the fingerprint commits with the rows)."""
        params = {"part_id": part_id, "fingerprint": fingerprint}
        return self.bind(self._q("record_partition_fingerprint"), params)

    # -- contracts and incremental runs (issue 15) ------------------------------------------

    def record_contract_failures(self, part_id: int, failures: dict[str, Any]) -> None:
        params = {"part_id": part_id, "failures": Jsonb(failures)}
        self.conn.execute(self._q("record_contract_failures"), params)

    def finished_extras_sql(self, part_id: int, **values: Any) -> str:
        """`mark_finished_extras` bound, for the write transaction (like finished_sql)."""
        failures = values.get("contract_failures")
        values["contract_failures"] = None if failures is None else Jsonb(failures)
        return self.bind(self._q("mark_finished_extras"), {"part_id": part_id, **values})

    def record_raw_fingerprints(self, run_id: str, found: dict[str | None, Any]) -> None:
        """Fingerprints ({key: fingerprints.RawFingerprint}) on the run's partitions."""
        keys = [k for k in found if k is not None]
        params = {
            "run_id": run_id,
            "keys": keys,
            "rows": [found[k].rows for k in keys],
            "hashes": [found[k].hash for k in keys],
        }
        self.conn.execute(self._q("record_raw_fingerprints"), params)
        if None in found:
            null = {"run_id": run_id, "rows": found[None].rows, "hash": found[None].hash}
            self.conn.execute(self._q("record_raw_fingerprint_null"), null)
        self.conn.execute(self._q("record_raw_fingerprint_splits"), {"run_id": run_id})

    def contract_failures(self, run_id: str) -> list[tuple[Any, ...]]:
        """(key, lo, hi, state, rows quarantined, failures) of partitions a contract flagged."""
        rows = self.conn.execute(self._q("contract_failures"), {"run_id": run_id})
        return [tuple(r) for r in rows]

    def record_incremental(self, run_id: str, summary: dict[str, Any]) -> None:
        params = {"run_id": run_id, "incremental": Jsonb(summary)}
        self.conn.execute(self._q("record_incremental"), params)

    def incremental(self, run_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(self._q("run_incremental"), {"run_id": run_id}).fetchone()
        return None if row is None or row[0] is None else dict(row[0])

    def last_finished(self, since: str, raw_table: str, column: str) -> list[tuple[Any, ...]]:
        """Per partition key: its last finished run up to `since` (last_finished_per_partition)."""
        params = {"since": since, "raw_table": raw_table, "partition_column": column}
        return [tuple(r) for r in self.conn.execute(self._q("last_finished_per_partition"), params)]
