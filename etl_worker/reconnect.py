"""Audit connections that outlive the database restarting: a worker thread's
(`ThreadConnection`) and a waiting command's (`PatientAudit`).

A worker's keeper and sweeper threads (supervisor.py) log a failure once and try again on
their next turn; the keeper's tells the worker's health (health.py) each time.

The audit connection of a command that waits (`--wait`, `--watch`) waits for the database.

A command that waits for a run must not die when the database goes away under it: on one
node `etl-enqueue --wait` or `etl-sweep --watch` may be the only sweeper, and the run goes
on without it. So a connection error after the command has started is a notice ("the
database is unreachable ...; waiting for it"), then a reconnect every RETRY_SECONDS, then a
second notice when it answers again. The first connection is not patient: a wrong URL at
start is the user's to fix, and says so at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from etl_worker.audit import Audit
from etl_worker.config import Settings
from etl_worker.db import connect, first_line
from etl_worker.errors import ServiceUnavailable
from etl_worker.health import DatabaseHealth

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between reconnects while the database is away.
RETRY_SECONDS = 1.0
#: The errors of a database that went away (or is starting up again), not of a query.
OUTAGE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, ServiceUnavailable)


class PatientAudit:
    """Audit reads that wait out a database outage (see the module docstring). `notice`
    gets the one line said when the database goes away and the one when it is back."""

    def __init__(self, settings: Settings, notice: Callable[[str], object]) -> None:
        self.settings = settings
        self.notice = notice
        self._conn: psycopg.Connection | None = self._connect()
        self._down_since: float | None = None

    def _connect(self) -> psycopg.Connection:
        url, timeout = self.settings.database_url, self.settings.network_timeout
        return connect(url, network_timeout=timeout)

    def run(self, action: Callable[[Audit], T]) -> T:
        """`action`'s result, once the database answers."""
        while True:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = self._connect()
                result = action(Audit(self._conn, self.settings.audit_schema))
            except OUTAGE_ERRORS as exc:
                self._drop()
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    self.notice(
                        f"the database is unreachable ({first_line(exc)}); waiting for it "
                        "to come back (Ctrl-C to stop waiting: the run goes on)"
                    )
                time.sleep(RETRY_SECONDS)
                continue
            if self._down_since is not None:
                away = time.monotonic() - self._down_since
                self.notice(f"the database is back after {away:.0f}s; carrying on")
                self._down_since = None
            return result

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already dead: nothing to release
                pass
        self._conn = None

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> PatientAudit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThreadConnection:
    """One worker thread's own database connection (supervisor.py's keeper and sweeper),
    opened when first needed and again after a failure: the database restarting must not
    end the thread. A failure is logged (the same error once), never raised."""

    def __init__(
        self,
        settings: Settings,
        network_timeout: float,
        *,
        tracker: DatabaseHealth | None = None,
    ) -> None:
        self.settings = settings
        self.network_timeout = network_timeout
        #: Told of every success and failure (the keeper's connection: the worker's health).
        self.tracker = tracker
        self._conn: psycopg.Connection | None = None
        self._failing: str | None = None

    def run(self, what: str, action: Callable[[Audit], Any]) -> Any:
        """`action`'s result; None (the failure logged as `what` failed) when it failed. A
        failure that repeats itself is logged once, until something else happens."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                url = self.settings.database_url
                self._conn = connect(url, network_timeout=self.network_timeout)
            result = action(Audit(self._conn, self.settings.audit_schema))
        except Exception as exc:
            # The same error again is said once, whichever of the keeper's jobs (the health
            # check every 2 s, a renewal) met it.
            error = first_line(exc)
            level = logging.DEBUG if error == self._failing else logging.WARNING
            log.log(level, "%s failed (will try again): %s", what, error)
            self._failing = error
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            if self.tracker is not None:
                self.tracker.failed(error)
            return None
        self._failing = None
        if self.tracker is not None:
            self.tracker.ok()
        return result
