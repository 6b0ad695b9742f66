"""Fleet health: why a worker cannot work, said by the worker, read by whoever waits on it.

Where it lives: in the worker's main process, and nowhere else. The supervisor checks the
database every PROBE_SECONDS and records here whether it answered (`DatabaseHealth`); the
worker hands that out as part of Celery's own `stats` reply (the supervisor's bootstep
`info`). Why not a row in the database: the worker that most needs to say something is the
one that cannot reach the database. Why not a Redis key: the reply travels over the
broker's control channel (pidbox), which Redis and AMQP brokers both carry, and it needs no
expiry, since a worker that does not answer is itself the answer. Flower asks every worker
for `stats` too: its worker page and `/api/workers` show the same `etl` section.

`ask_fleet` broadcasts that `stats` request (one round trip, `timeout` seconds) and
`problems` turns the replies into the lines `etl-status` and `--wait` print: "no worker is
consuming queue Q", "2 workers cannot reach the database: <error> (since HH:MM:SS)".
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery

#: How often a worker's main process checks that its database answers.
PROBE_SECONDS = 2.0
#: How long `ask_fleet` collects replies: workers answer from their event loop, in
#: milliseconds; a second leaves room for a loaded machine.
ASK_TIMEOUT = 1.0
#: The key of this package's section in a worker's `stats` reply.
STATS_KEY = "etl"


def clock(at: float | None) -> str:
    """HH:MM:SS, local time (the reader's, for an epoch a worker sent)."""
    return "-" if at is None else datetime.fromtimestamp(at).strftime("%H:%M:%S")


class DatabaseHealth:
    """Whether the worker's database answered when last checked, and since when it has not
    (thread-safe: the keeper thread writes, the event loop reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_ok_at: float | None = None
        self.error: str | None = None
        self.error_since: float | None = None
        self.checked_at: float | None = None

    def ok(self) -> None:
        with self._lock:
            self.checked_at = self.last_ok_at = time.time()
            self.error = self.error_since = None

    def failed(self, error: str) -> None:
        with self._lock:
            self.checked_at = now = time.time()
            if self.error_since is None:
                self.error_since = now
            self.error = error

    def report(self, queues: Iterable[str]) -> dict[str, Any]:
        """This worker's `etl` section of its `stats` reply (JSON: Flower shows it as is)."""
        with self._lock:
            error, since = self.error, self.error_since
            section = {
                "queues": sorted(queues),
                "database_ok": error is None and self.last_ok_at is not None,
                "database_error": error,
                "error_since": since,
                "last_ok_at": self.last_ok_at,
                "checked_at": self.checked_at,
            }
        if error is not None:
            section["summary"] = f"cannot reach the database: {error} (since {clock(since)})"
        elif self.last_ok_at is None:
            section["summary"] = "database not checked yet"
        else:
            section["summary"] = "ok"
        return section


@dataclass(frozen=True)
class WorkerReport:
    """What one worker said of itself."""

    name: str
    #: The queues it consumes; None for a worker that does not say (older code).
    queues: tuple[str, ...] | None
    database_error: str | None = None
    error_since: float | None = None

    @classmethod
    def of(cls, name: str, stats: Any) -> WorkerReport:
        section = stats.get(STATS_KEY) if isinstance(stats, Mapping) else None
        if not isinstance(section, Mapping):
            return cls(name, None)
        return cls(
            name,
            tuple(section.get("queues") or ()),
            section.get("database_error"),
            section.get("error_since"),
        )


class FleetUnreachable(Exception):
    """The workers could not be asked: the broker did not take the request."""


def ask_fleet(app: Celery, timeout: float = ASK_TIMEOUT) -> list[WorkerReport]:
    """Every live worker's report, over the broker's control channel (Redis or AMQP alike).
    A worker that does not answer within `timeout` is not there, or cannot hear the broker."""
    try:
        with app.connection_for_write() as conn:
            # A broker that is away fails this at once, not after kombu's default retries.
            conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.2)
            replies = app.control.inspect(timeout=timeout, connection=conn).stats() or {}
    except Exception as exc:  # the broker is away: the caller says so and asks again later
        raise FleetUnreachable(str(exc).splitlines()[0] if str(exc) else repr(exc)) from exc
    return sorted((WorkerReport.of(n, s) for n, s in replies.items()), key=lambda r: r.name)


def problems(reports: list[WorkerReport], queue: str) -> list[str]:
    """Why the workers of `queue` make no progress, one line per cause; [] when nothing
    the workers said explains it."""
    consumers = [r for r in reports if r.queues is None or queue in r.queues]
    if not consumers:
        if not reports:
            return [
                f"no worker is consuming queue {queue}: no worker answered within "
                f"{ASK_TIMEOUT:g}s — start one (celery -A etl_worker worker -Q {queue})"
            ]
        others = sorted({q for r in reports for q in r.queues or ()})
        return [
            f"no worker is consuming queue {queue} ({len(reports)} worker(s) answered, "
            f"consuming {', '.join(others) or 'nothing'}) — start one with -Q {queue}"
        ]
    broken: dict[str, list[WorkerReport]] = defaultdict(list)
    for report in consumers:
        if report.database_error:
            broken[report.database_error].append(report)
    lines = []
    for error, workers in sorted(broken.items(), key=lambda item: -len(item[1])):
        since = min(r.error_since or time.time() for r in workers)
        count = "1 worker" if len(workers) == 1 else f"{len(workers)} workers"
        lines.append(f"{count} cannot reach the database: {error} (since {clock(since)})")
    if broken and len(consumers) > sum(len(w) for w in broken.values()):
        working = len(consumers) - sum(len(w) for w in broken.values())
        lines.append(f"{working} other worker(s) of queue {queue} can")
    return lines
