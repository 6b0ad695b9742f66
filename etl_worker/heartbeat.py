"""The lease heartbeat for callers without a Celery worker (tests, tools that call
`pipeline.run_partition` directly): while the process works on a partition, a daemon thread
renews the partition's lease every `lease_seconds / 4`. When the process dies, renewals
stop, the lease expires, and the sweeper re-enqueues the partition.

In a Celery worker the lease is renewed by the worker's main process instead
(supervisor.py): a thread here would starve while a transform holds the GIL.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from etl_worker.audit import Audit
from etl_worker.db import connect, first_line

log = logging.getLogger(__name__)


class Heartbeat:
    """One per pool process; its own connection, so renewals never wait on the data path."""

    def __init__(
        self, database_url: str, schema: str, lease_seconds: float, *, network_timeout: float
    ) -> None:
        self._url = database_url
        self._schema = schema
        self._lease = lease_seconds
        # A renewal stuck on a dead socket fails after this, in time to reconnect and renew
        # before the lease lapses (Settings.heartbeat_network_timeout).
        self._network_timeout = network_timeout
        self._lock = threading.Lock()
        self._current: tuple[int, str] | None = None
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None

    def watch(self, part_id: int, owner: str) -> None:
        with self._lock:
            self._current = (part_id, owner)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="etl-heartbeat", daemon=True)
            self._thread.start()

    def unwatch(self) -> None:
        with self._lock:
            self._current = None

    def _run(self) -> None:
        while True:
            self._wake.wait(self._lease / 4)
            with self._lock:
                current = self._current
            if current is not None:
                self._renew(*current)

    def connection(self) -> psycopg.Connection:
        """The heartbeat's own connection, opened on first use and after a failure."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url, network_timeout=self._network_timeout)
        return self._conn

    def _renew(self, part_id: int, owner: str) -> None:
        try:
            if not Audit(self.connection(), self._schema).renew_lease(part_id, owner, self._lease):
                log.warning("partition %s: lease is no longer ours (%s)", part_id, owner)
        except Exception as exc:  # keep beating: the database may come back
            log.warning("partition %s: lease renewal failed: %s", part_id, first_line(exc))
            if self._conn is not None:
                self._conn.close()
            self._conn = None
