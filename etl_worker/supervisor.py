"""The worker's main process looks after its pool processes and the fleet: it renews the
lease of every partition its pool processes run, takes its turn at the fleet's sweep, and
records how a pool process died mid-partition.

Why the main process: a transform stuck in C code or holding the GIL starves every other
thread of its own process, a lease heartbeat included; its lease would lapse, the sweeper
would send the partition again, and a second process would get stuck on it too. The main
process is never inside a transform, and Celery tells it which pool process runs which
request (`celery.worker.state.active_requests`, each with `.id`, `.worker_pid`, `.kwargs`)
and how each one ended (`PartitionRequest`). None of this runs in the consumer's event
loop: two daemon threads, each with its own database connection, do the work.

- The keeper renews every running attempt's lease in one statement every
  ETL_LEASE_SECONDS / 4, samples the pool processes' memory every second, and records
  deaths the event loop hands it. It keeps going through a warm shutdown, while the pool
  drains, until the process exits.
- The keeper also checks every health.PROBE_SECONDS that the database answers, and keeps
  the answer (`health`): the worker hands it out with Celery's `stats` reply, so a worker
  that cannot reach its database still says why over the broker (health.py).
- The sweeper tries for the fleet's sweep turn every ETL_SWEEP_INTERVAL / 4; about one
  worker per interval gets it (`sweeper.take_turn_and_sweep`), so a dead node's partitions
  are sent again within ETL_LEASE_SECONDS + ETL_SWEEP_INTERVAL with no process besides
  the workers.

`Supervisor.pool()` is what the main process knows of each pool process: the partition
it runs and its last error.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import psutil
from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import bootsteps
from celery.worker.request import Request
from celery.worker.state import active_requests

from etl_worker import deaths, health, memory, sweeper
from etl_worker.audit import lease_owner
from etl_worker.celery_app import TASK_NAME, make_app
from etl_worker.config import Settings
from etl_worker.db import first_line
from etl_worker.errors import traceback_last_line
from etl_worker.partition import PartitionKey
from etl_worker.reconnect import ThreadConnection

log = logging.getLogger(__name__)

#: How often the keeper samples its pool processes' memory: the last sample before a
#: SIGKILL is the evidence of an OOM kill where the kernel keeps no count.
SAMPLE_SECONDS = 1.0
#: A pool process that is gone is forgotten this long after its last error.
FORGET_SECONDS = 3600.0
#: The longest the event loop waits for a death to be recorded. Celery requeues the
#: message right after: recorded first, the next delivery finds the cause on the row (and
#: the lease still the dead attempt's: the recording is owner-checked).
RECORD_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class Attempt:
    """A partition task one pool process runs, as the main process sees its request."""

    request_id: str
    pid: int
    run_id: str
    part_id: int
    label: str
    owner: str

    @classmethod
    def of(cls, request: Any, host: str) -> Attempt | None:
        """The attempt a Celery request stands for; None for other tasks, and for a
        request no pool process has accepted yet."""
        if request.name != TASK_NAME or not request.worker_pid:
            return None
        kwargs = request.kwargs or {}
        try:
            part_id = int(kwargs["part_id"])
            lo, hi = (kwargs.get("split") or [None, None])[:2]
            label = PartitionKey(kwargs.get("zip"), lo, hi).label
            run_id = str(kwargs["run_id"])
        except (KeyError, TypeError, ValueError):
            return None  # not a message this code sent: the pool process refuses it
        owner = lease_owner(host, request.worker_pid, request.id)
        return cls(request.id, request.worker_pid, run_id, part_id, label, owner)


@dataclass(frozen=True)
class PoolProcess:
    """What the main process knows of one of its pool processes."""

    pid: int
    #: The partition it works on now, if any.
    attempt: Attempt | None = None
    #: Its resident memory when last sampled.
    rss_bytes: int | None = None
    #: The last error a partition task of it ended with, or how it died.
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass
class _Record:
    """A death to record, handed from the event loop to the keeper."""

    attempt: Attempt
    death: deaths.Death
    done: threading.Event


class Supervisor:
    """The main process's care of its pool processes (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        nodename: str,
        *,
        active: Callable[[], Iterable[Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.nodename = nodename
        self.host = socket.gethostname()
        self._active = active or _active_requests
        self._lock = threading.Lock()
        self._pool: dict[int, PoolProcess] = {}
        self._records: queue.Queue[_Record] = queue.Queue()
        self._oom_kills = deaths.OomKills()
        self._memory_limit = memory.cgroup_limit()
        self._stopping = threading.Event()
        #: Whether the database answered the keeper's last check (health.py).
        self.health = health.DatabaseHealth()
        #: Owners whose lease the last renewal did not find, and those already warned of.
        self._missed: set[str] = set()
        self._lost: set[str] = set()

    # -- life cycle (the bootstep) -----------------------------------------------------

    def start(self) -> None:
        for target, name in ((self._keep, "etl-keeper"), (self._sweep, "etl-sweeper")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def stop(self) -> None:
        """Stop sweeping: the worker is shutting down. Leases are still renewed until the
        process exits, because Celery drains the pool (running partitions finish) after
        this step has stopped."""
        self._stopping.set()

    # -- what the main process knows -----------------------------------------------------

    def pool(self) -> list[PoolProcess]:
        """Every pool process seen so far, with its current partition and last error."""
        with self._lock:
            return sorted(self._pool.values(), key=lambda p: p.pid)

    def attempts(self) -> list[Attempt]:
        """The partitions the pool processes run now."""
        found = (Attempt.of(r, self.host) for r in self._active())
        return [a for a in found if a is not None]

    # -- the event loop's side -----------------------------------------------------------

    def attempt_ended(self, request: Any, exc: BaseException) -> None:
        """A partition request ended with an exception (called by `PartitionRequest` in
        the event loop, before Celery acks or requeues the message). A pool process that
        died has its death recorded on the audit row, owner-checked, before this returns
        (at most RECORD_WAIT_SECONDS)."""
        attempt = Attempt.of(request, self.host)
        if attempt is None:
            return
        death = self._death(attempt, exc)
        self._note(attempt.pid, death.text if death else traceback_last_line(exc))
        if death is None:
            return
        # A time limit's words name the partition already (they are also the audit error).
        named = death.cause is deaths.Cause.TIME_LIMIT
        log.error("%s", death.text if named else f"partition {attempt.label}: {death.text}")
        record = _Record(attempt, death, threading.Event())
        self._records.put(record)
        if not record.done.wait(RECORD_WAIT_SECONDS):
            log.warning(
                "partition %s: could not record how its process died within %gs; the "
                "next delivery may not see it",
                attempt.label,
                RECORD_WAIT_SECONDS,
            )

    def _death(self, attempt: Attempt, exc: BaseException) -> deaths.Death | None:
        if isinstance(exc, TimeLimitExceeded):
            limit = exc.args[0] if exc.args else self.settings.task_time_limit
            return deaths.hard_time_limit(attempt.label, float(limit))
        if isinstance(exc, WorkerLostError):
            with self._lock:
                known = self._pool.get(attempt.pid)
            killed, _ = deaths.exit_status(str(exc))
            # Only a SIGKILL may be the OOM killer's: only it takes one of the kills counted.
            oom_killed = self._oom_kills.claim() if killed == signal.SIGKILL else None
            return deaths.lost(
                attempt.pid,
                str(exc),
                oom_killed=oom_killed,
                rss=known.rss_bytes if known else None,
                limit=self._memory_limit,
            )
        return None

    def _note(self, pid: int, error: str) -> None:
        with self._lock:
            known = self._pool.get(pid) or PoolProcess(pid)
            self._pool[pid] = replace(known, last_error=error, last_error_at=time.time())

    # -- the keeper thread ---------------------------------------------------------------

    def _keep(self) -> None:
        renew_every = self.settings.lease_seconds / 4
        tick = min(SAMPLE_SECONDS, renew_every)
        # Gives up on a silent database within half a lease at most, in time to reconnect
        # and renew before the leases lapse (network.py).
        keeper = ThreadConnection(
            self.settings, self.settings.heartbeat_network_timeout, tracker=self.health
        )
        next_renewal = next_probe = 0.0
        while True:
            try:
                self._record(keeper, self._records.get(timeout=tick))
                continue  # more may follow at once: record them before anything else
            except queue.Empty:
                pass
            try:
                attempts = self.refresh()
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + renew_every
                    self._renew(keeper, attempts)
                if time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + health.PROBE_SECONDS
                    keeper.run("database check", lambda audit: audit.ping())
            except Exception as exc:  # the keeper must outlive any one failure
                log.warning("lease keeper: %s", first_line(exc))

    def refresh(self) -> list[Attempt]:
        """Update what is known of each pool process (its partition, its memory) from
        Celery's running requests; returns the attempts running now."""
        attempts = self.attempts()
        running = {a.pid: a for a in attempts}
        rss = {pid: memory.process_rss(pid) for pid in running}
        forget_before = time.time() - FORGET_SECONDS
        with self._lock:
            for pid in set(self._pool) | set(running):
                known = self._pool.get(pid) or PoolProcess(pid)
                gone = pid not in running and not psutil.pid_exists(pid)
                if gone and (known.last_error_at or 0) < forget_before:
                    del self._pool[pid]  # replaced long ago (max tasks/memory per child)
                    continue
                # A process being killed reads 0, then nothing: keep its last real sample.
                sampled = rss.get(pid) or known.rss_bytes
                self._pool[pid] = replace(known, attempt=running.get(pid), rss_bytes=sampled)
        return attempts

    def _renew(self, keeper: ThreadConnection, attempts: list[Attempt]) -> None:
        if not attempts:
            return
        leases = [(a.part_id, a.owner) for a in attempts]
        renewed = keeper.run(
            "lease renewal", lambda audit: audit.renew_leases(leases, self.settings.lease_seconds)
        )
        if renewed is None:
            return
        missed = {a.owner for a in attempts} - renewed
        for attempt in attempts:
            # Missed twice in a row: not an attempt that is about to claim its lease, or has
            # just given it back and not told the event loop yet.
            lost = attempt.owner in missed and attempt.owner in self._missed
            if lost and attempt.owner not in self._lost:
                self._lost.add(attempt.owner)
                log.warning(
                    "partition %s: attempt %s no longer holds its lease (it lapsed or the "
                    "partition moved on); its outcome will not be recorded",
                    attempt.label,
                    attempt.owner,
                )
        self._missed = missed

    def _record(self, keeper: ThreadConnection, record: _Record) -> None:
        attempt, death = record.attempt, record.death
        try:
            recorded = keeper.run(
                "recording how a pool process died",
                lambda audit: audit.record_death(
                    attempt.part_id, attempt.owner, death.cause, death.text, final=death.final
                ),
            )
        finally:
            record.done.set()
        if recorded is False:
            log.warning(
                "partition %s: attempt %s no longer held the lease; how it died was not recorded",
                attempt.label,
                attempt.owner,
            )

    # -- the sweeper thread --------------------------------------------------------------

    def _sweep(self) -> None:
        by = f"{self.nodename} (pid {os.getpid()})"
        app = make_app(self.settings)
        sweeping = ThreadConnection(self.settings, self.settings.network_timeout)
        while not self._stopping.wait(self.settings.sweep_interval / 4):
            sweeping.run(
                "sweep",
                lambda audit: sweeper.take_turn_and_sweep(
                    self.settings, audit.conn, by=by, app=app
                ),
            )


def _active_requests() -> list[Any]:
    """Celery's requests that a pool process runs now. The event loop adds and removes
    them while this thread reads: copy, and copy again if the set changed meanwhile."""
    for _ in range(10):
        try:
            return list(active_requests)
        except RuntimeError:  # "Set changed size during iteration"
            continue
    return []


#: The supervisor of this worker, in its main process (None elsewhere).
_running: Supervisor | None = None


def running() -> Supervisor | None:
    """This worker's supervisor, in its main process: what it knows of its pool processes
    (`pool()`) is there to read. None outside a worker's main process."""
    return _running


class PartitionRequest(Request):
    """Celery's request for a partition task, in the worker's main process: tells the
    supervisor how an attempt ended before Celery acks or requeues its message."""

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        if _running is not None:
            exc = exc_info.exception
            if isinstance(exc, ExceptionWithTraceback):
                exc = exc.exc
            try:
                _running.attempt_ended(self, exc)
            except Exception:  # never keep Celery from acking or requeueing the message
                log.exception("partition task %s: could not record how it ended", self.id)
        super().on_failure(exc_info, send_failed_event, return_ok)


class SupervisorStep(bootsteps.StartStopStep):
    """Starts the supervisor in the worker's main process once the pool is up (a worker
    bootstep: it runs once per worker, never in a pool process)."""

    requires = ("celery.worker.components:Pool",)
    #: Set by `step_for`.
    settings: Settings | None = None

    def create(self, worker: Any) -> Supervisor:
        global _running
        _running = Supervisor(self.settings or Settings.load(), worker.hostname)
        return _running

    def info(self, worker: Any) -> dict[str, Any]:
        """This worker's part of Celery's `stats` reply (what `etl-status`, `--wait` and
        Flower read): the queues it consumes and whether its database answers."""
        if _running is None:
            return {}
        consumer = getattr(worker, "consumer", None)
        task_consumer = getattr(consumer, "task_consumer", None)
        queues = [q.name for q in getattr(task_consumer, "queues", None) or ()]
        return {health.STATS_KEY: _running.health.report(queues)}


def step_for(settings: Settings) -> type[SupervisorStep]:
    """The bootstep class for a worker app built from `settings`."""
    return type("SupervisorStep", (SupervisorStep,), {"settings": settings})
