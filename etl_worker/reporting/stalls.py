"""Why a run makes no progress, asked of the fleet while a command waits on it.

A run sitting at 0% says nothing by itself: no worker may consume its queue, or every
worker may be unable to reach its database. `StallWatch` asks the workers (health.py) once
the run has made no progress for STALL_SECONDS, then again at most every ASK_EVERY_SECONDS
while it stays stalled, and says each new answer once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from celery import Celery

from etl_worker.celery_app import make_app
from etl_worker.config import Settings
from etl_worker.health import FleetUnreachable, ask_fleet, problems

#: No progress for this long, and the waiting command asks the fleet why.
STALL_SECONDS = 3.0
#: While stalled, ask again this often (each question takes health.ASK_TIMEOUT).
ASK_EVERY_SECONDS = 5.0


def fleet_problems(app: Celery, queue: str) -> list[str]:
    """What the workers say stops `queue`'s work, one line per cause."""
    try:
        reports = ask_fleet(app)
    except FleetUnreachable as exc:
        return [f"cannot ask the workers: the broker did not take the request ({exc})"]
    return problems(reports, queue)


class StallWatch:
    """Call with the number of partitions done at each poll; `notice` hears, once, each
    new explanation of a stall (see the module docstring)."""

    def __init__(self, settings: Settings, queue: str, notice: Callable[[str], object]) -> None:
        self.settings = settings
        self.queue = queue
        self.notice = notice
        self._app: Celery | None = None
        self._done: int | None = None
        self._since = time.monotonic()
        self._asked = float("-inf")
        self._said: tuple[str, ...] = ()

    @property
    def app(self) -> Celery:
        if self._app is None:
            self._app = make_app(self.settings)
        return self._app

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if done != self._done:
            self._done, self._since = done, now
            return
        if now - self._since < STALL_SECONDS or now - self._asked < ASK_EVERY_SECONDS:
            return
        self._asked = now
        lines = tuple(fleet_problems(self.app, self.queue))
        if lines != self._said:
            for line in lines:
                self.notice(line)
            self._said = lines
