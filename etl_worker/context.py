"""What one worker process keeps between partitions: its connections, its heartbeat, and
everything it learned about a run (tables, columns, target types, the transform).

Connections are opened lazily in the process that uses them (Celery's prefork pool forks
children from a parent that never touches them) and dropped after a connection error, so the
next partition reconnects instead of failing on a dead socket.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg

from etl_worker.audit import Audit, RunSpec
from etl_worker.config import Settings
from etl_worker.db import (
    Column,
    TableName,
    adbc_connect,
    connect,
    find_column,
    resolve_schema,
    table_columns,
    table_exists,
)
from etl_worker.errors import ConfigError, TransformRefused
from etl_worker.fingerprint import allowed_modules, load_checked, refusal_message
from etl_worker.heartbeat import Heartbeat
from etl_worker.load import TargetSchema, target_schema
from etl_worker.runguard import target_oid
from etl_worker.transforms import load_transform


@dataclass(frozen=True)
class PreparedRun:
    """A run's spec resolved against the database, once per process."""

    spec: RunSpec
    raw: TableName
    target: TableName
    raw_columns: list[Column]
    partition_column: Column
    split_column: str | None
    target_schema: TargetSchema
    transform: Callable[[pd.DataFrame], pd.DataFrame]
    #: The target's oid: what writers of a partition lock on and fence by, whatever name
    #: each run gives the table (None for a dry run's missing target: nothing is written).
    target_oid: int | None = None


@dataclass(frozen=True)
class RunGuards:
    """What one delivery of a run's partition checks and reads with, read fresh each time
    (--resume changes both): the fingerprint of the transform this process runs, and the
    snapshot to read (None: the raw table as it is now)."""

    fingerprint: str | None
    snapshot_id: str | None


class WorkerContext:
    def __init__(self, settings: Settings, worker_name: str | None = None) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.worker_name = worker_name or f"{self.host}:{self.pid}"
        self._pg: psycopg.Connection | None = None
        self._adbc: Any = None
        self._runs: dict[str, PreparedRun] = {}
        self._transforms: dict[str, str] = {}  # run id -> its transform's module:function
        # (run id, fingerprint wanted) -> why this process refuses it: said once, then cached.
        self._refusals: dict[tuple[str, str | None], str] = {}
        self._serving: set[tuple[str, str | None]] = set()
        self.heartbeat = Heartbeat(
            settings.database_url,
            settings.audit_schema,
            settings.lease_seconds,
            network_timeout=settings.heartbeat_network_timeout,
        )

    # -- connections ---------------------------------------------------------------------

    @property
    def pg(self) -> psycopg.Connection:
        if self._pg is None or self._pg.closed or self._pg.broken:
            self._pg = connect(
                self.settings.database_url, network_timeout=self.settings.network_timeout
            )
        return self._pg

    @property
    def audit(self) -> Audit:
        return Audit(self.pg, self.settings.audit_schema)

    @property
    def adbc(self) -> Any:
        if self._adbc is None:
            self._adbc = adbc_connect(
                self.settings.database_url, network_timeout=self.settings.network_timeout
            )
        return self._adbc

    def reset_connections(self) -> None:
        """Drop both connections (after a connection error); the next use reconnects."""
        for conn in (self._pg, self._adbc):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # already dead: nothing to release
                    pass
        self._pg = None
        self._adbc = None

    def close(self) -> None:
        self.reset_connections()

    # -- runs ----------------------------------------------------------------------------

    def prepared(self, run_id: str) -> PreparedRun:
        run = self._runs.get(run_id)
        if run is None:
            run = self.prepare_run(self.audit.get_run(run_id))
            self._runs[run_id] = run
        return run

    def guards(self, run_id: str) -> RunGuards:
        """Check that this process may and does run the transform the run wants, before the
        partition is claimed; raises `TransformRefused` (not an attempt: the message comes
        back for a worker that fits) and records the refusal once per (worker, run)."""
        guards = self.audit.run_guards(run_id)
        if guards is None:  # a message of a run this database does not have: the claim
            return RunGuards(None, None)  # finds no partition and skips it, as before
        wanted, snapshot_id = guards
        key = (run_id, wanted)
        refused = self._refusals.get(key)
        if refused is not None:
            raise TransformRefused(refused, repeated=True)
        transform = self._transforms.get(run_id)
        if transform is None:
            transform = self._transforms[run_id] = self.audit.get_run(run_id).transform
        allowed = allowed_modules(self.settings.transform_modules)
        loaded: str | None = None
        try:
            # The allow-list is checked before anything is imported.
            loaded = load_checked(transform, allowed).fingerprint
        except ConfigError as exc:  # not allowed here, or not importable here
            reason = f"this worker will not run run {run_id}'s transform: {exc}"
        else:
            if wanted is None or loaded == wanted:
                if key not in self._serving:
                    self._serving.add(key)
                    self.audit.clear_refusal(run_id, self.worker_name)
                return RunGuards(loaded, snapshot_id)
            reason = refusal_message(transform, loaded, wanted)
        self._refusals[key] = reason
        self.audit.record_refusal(run_id, self.worker_name, loaded, wanted, reason)
        raise TransformRefused(reason)

    def prepare_run(self, spec: RunSpec) -> PreparedRun:
        """Resolve a run's spec against the database (tables, types, the transform)."""
        raw = resolve_schema(self.pg, TableName.parse(spec.raw_table))
        target = resolve_schema(self.pg, TableName.parse(spec.target_table))
        raw_columns = table_columns(self.pg, raw)
        # A dry run may have no target table (it writes nothing, so it creates nothing):
        # then the output is checked against the table the producer would create.
        schema_table = target if table_exists(self.pg, target) or not spec.dry_run else raw
        columns = raw_columns if schema_table is raw else table_columns(self.pg, target)
        return PreparedRun(
            spec=spec,
            raw=raw,
            target=target,
            raw_columns=raw_columns,
            partition_column=find_column(raw_columns, spec.partition_column, raw),
            split_column=spec.options.get("split_column"),
            target_schema=target_schema(self.adbc, schema_table, columns),
            # Only after `guards` let this process import it (the allow-list).
            transform=load_transform(spec.transform),
            target_oid=None if spec.dry_run else target_oid(self.pg, target),
        )


_context: WorkerContext | None = None


def worker_context(
    settings: Settings | None = None, worker_name: str | None = None
) -> WorkerContext:
    """This process's context, created on first use (and again after a fork)."""
    global _context
    if _context is None or _context.pid != os.getpid():
        _context = WorkerContext(settings or Settings.load(), worker_name)
    elif worker_name and _context.worker_name != worker_name:
        _context.worker_name = worker_name
    return _context
