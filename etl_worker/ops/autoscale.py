"""Memory-aware pool autoscaling for `celery -A etl_worker worker --autoscale=MAX,MIN`.

Celery's own autoscaler grows the pool to the number of messages the worker has reserved
(the backlog it sees), up to MAX. With partitions of very different sizes, MAX processes
each holding a big partition may not fit in memory, and the kernel's OOM killer picks one.
This autoscaler grows the same way but caps the pool at

    floor(memory budget / memory one process needs)

- budget: ETL_WORKER_MEMORY if set, but never more than what is free now plus what the pool
  already holds (free memory counts the container's cgroup limit, see memory.py);
- need: the larger of ETL_PROCESS_MEMORY and the largest peak RSS the audit table measured
  for one pool process in the latest runs, so a fleet learns its partitions' real size.

The cap never goes below MIN (nor below one process: a node that runs nothing helps no
one; the memory ceiling and the attempts cap deal with a partition that cannot fit).

It also lowers the worker's reservation limit to the cap. With `worker_disable_prefetch` the
worker fetches a message only while fewer than `max_concurrency` are reserved, so a capped
worker leaves the rest in Redis for other nodes instead of holding messages it cannot run
(their visibility clock would be ticking while they wait).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from time import monotonic
from typing import Any

from celery.worker.autoscale import Autoscaler

from etl_worker import memory
from etl_worker.audit import Audit
from etl_worker.config import Settings
from etl_worker.db import connect, first_line

log = logging.getLogger(__name__)

#: How often the measured need is read again from the audit table.
AUDIT_REFRESH_SECONDS = 60.0
#: How many of the latest runs the measured need is taken from.
AUDIT_RUNS = 3


@dataclass(frozen=True)
class MemoryCap:
    """How many pool processes memory allows, and why."""

    processes: int
    budget: int
    need: int
    #: Where `need` came from: "audit" (measured) or "ETL_PROCESS_MEMORY".
    source: str

    def describe(self) -> str:
        return (
            f"memory allows {self.processes} pool process(es): budget {self.budget / 2**20:,.0f} "
            f"MiB / {self.need / 2**20:,.0f} MiB per process ({self.source})"
        )


def memory_cap(
    budget: int, need: int, *, low: int, high: int, source: str = "ETL_PROCESS_MEMORY"
) -> MemoryCap:
    """floor(budget / need), kept within [max(low, 1), high]."""
    floor = max(low, 1)
    fits = budget // max(need, 1)
    return MemoryCap(max(floor, min(high, fits)), budget, need, source)


class MeasuredNeed:
    """The largest per-process peak RSS of recent runs, read from the audit table in a
    background thread: the autoscaler runs in the worker's event loop, which must never
    wait on Postgres (or on a connect timeout while Postgres is down). Only the first read,
    as the worker starts, is made in the caller's thread (`refresh_now`)."""

    def __init__(self, settings: Settings, refresh_seconds: float = AUDIT_REFRESH_SECONDS):
        self._settings = settings
        self._refresh_seconds = refresh_seconds
        self._value: int | None = None
        self._checked = float("-inf")
        self._thread: threading.Thread | None = None
        self._failing = False

    def get(self) -> int | None:
        """The last value read (None until one was); starts a refresh when it is stale."""
        now = monotonic()
        stale = now - self._checked >= self._refresh_seconds
        if stale and (self._thread is None or not self._thread.is_alive()):
            self._checked = now
            self._thread = threading.Thread(target=self.refresh, name="etl-need", daemon=True)
            self._thread.start()
        return self._value

    def refresh_now(self) -> None:
        """A read in the calling thread, counted as the last one. The autoscaler makes it
        before the pool forks, so whatever a read imports (psycopg's host name encoding,
        for one) is imported there and never by the background thread: an import in
        progress there when the pool forks would leave the new process holding its lock
        for good."""
        self._checked = monotonic()
        self.refresh()

    def refresh(self) -> None:
        # A connection per read, closed at once: the pool forks children from this process,
        # and they must not inherit an open socket to Postgres.
        try:
            with connect(self._settings.database_url, connect_timeout=5) as conn:
                value = Audit(conn, self._settings.audit_schema).recent_peak_rss(AUDIT_RUNS)
        except Exception as exc:  # keep the last value; Postgres may come back
            if not self._failing:
                log.warning("autoscaler: cannot read measured memory: %s", first_line(exc))
            self._failing = True
            return
        self._failing = False
        self._value = value


class MemoryAwareAutoscaler(Autoscaler):
    """Celery's autoscaler, capped by memory (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = Settings.load()
        self.measured = MeasuredNeed(self.settings)
        self.measured.refresh_now()
        self.cap: MemoryCap | None = None
        # Before the consumer starts: it must not reserve more than the first cap allows.
        self.apply_cap()

    def memory_cap(self) -> MemoryCap:
        measured = self.measured.get()
        need, source = self.settings.process_memory_bytes, "ETL_PROCESS_MEMORY"
        if measured is not None and measured > need:
            need, source = measured, "audit"
        budget = memory.available_memory() + memory.children_rss()
        if self.settings.worker_memory_bytes:
            budget = min(budget, self.settings.worker_memory_bytes)
        return memory_cap(
            budget, need, low=self.min_concurrency, high=self.max_concurrency, source=source
        )

    def apply_cap(self) -> int:
        """Measure the cap and make it the worker's reservation limit. Returns the cap."""
        cap = self.memory_cap()
        if self.cap is None or cap.processes != self.cap.processes:
            log.info("autoscaler: %s", cap.describe())
        self.cap = cap
        if self.worker is not None:
            self.worker.max_concurrency = cap.processes  # see the module docstring
        return cap.processes

    def _maybe_scale(self, req: Any = None) -> bool:
        limit = self.apply_cap()
        procs = self.processes
        if procs > limit:  # memory got tighter: give idle processes back now
            self._shrink(procs - limit)
            return True
        if min(self.qty, limit) > procs:
            self.scale_up(min(self.qty, limit) - procs)
            return True
        if max(self.qty, self.min_concurrency) < procs:
            self.scale_down(procs - max(self.qty, self.min_concurrency))
            return True
        return False

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = super().info()
        if self.cap is not None:
            info.update(
                limit=self.cap.processes,
                memory_budget=self.cap.budget,
                process_memory=self.cap.need,
                process_memory_source=self.cap.source,
            )
        return info
