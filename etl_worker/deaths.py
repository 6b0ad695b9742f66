"""How a pool process died mid-partition, told apart from its worker's main process, and
the words the audit row gets for it.

Celery's main process hears of an attempt's process ending without an outcome in one of
two ways (`celery/worker/request.py`, `billiard/pool.py`):

- `TimeLimitExceeded`: the task ran past its hard time limit and billiard killed the
  process (SIGTERM, then SIGKILL). A task that was still running Python would have stopped
  at the soft limit first: this one was stuck in C code or held the GIL.
- `WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 3.")`: the process
  died on its own account. A SIGKILL does not say who sent it. The kernel counts the
  processes its OOM killer killed in the memory cgroup's `oom_kill` (v2 memory.events, v1
  memory.oom_control; any OOM kill of a process of the cgroup, the machine-wide one too):
  a SIGKILL while that count rose is an OOM kill. Where no count is readable, a SIGKILL
  of a process last sampled near the cgroup's memory limit counts as one.

Only an OOM kill earns the "out of memory?" hint; a process killed by someone else, or
one that crashed, says so instead.
"""

from __future__ import annotations

import enum
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass

from etl_worker import memory
from etl_worker.units import format_bytes

#: A process sampled at this share of the memory limit or more, then SIGKILLed, was most
#: likely killed by the OOM killer (used only where the kernel keeps no count).
NEAR_LIMIT = 0.9

_STATUS = re.compile(r"signal (\d+)|exitcode (\d+)")


class Cause(enum.StrEnum):
    """How an attempt's process ended (the audit row's `death_cause`)."""

    TIME_LIMIT = "time_limit"
    OOM = "oom"
    SIGNAL = "signal"
    EXIT = "exit"


@dataclass(frozen=True)
class Death:
    cause: Cause
    #: One line for the audit row's error.
    text: str
    #: The partition is failed (a retry would end the same way), rather than sent again.
    final: bool = False


def exit_status(message: str) -> tuple[int | None, int | None]:
    """(signal, exit code) from a WorkerLostError's message, as billiard words it
    (`human_status`: "signal 9 (SIGKILL)", "exitcode 1"); (None, None) if it says neither."""
    match = _STATUS.search(message)
    if match is None:
        return None, None
    if match[1] is not None:
        return int(match[1]), None
    return None, int(match[2])


def signal_name(number: int) -> str:
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def hard_time_limit(label: str, seconds: float) -> Death:
    """The process was killed at the hard time limit: the partition fails, since another
    attempt would be stopped the same way."""
    return Death(Cause.TIME_LIMIT, hard_time_limit_error(label, seconds), final=True)


def lost(
    pid: int | None,
    message: str,
    *,
    oom_killed: bool | None,
    rss: int | None,
    limit: int | None,
) -> Death:
    """A pool process that died mid-partition (`message`: its WorkerLostError's).
    `oom_killed`: whether the cgroup's OOM-kill count rose (None: no count readable);
    `rss`: its memory when last sampled; `limit`: the cgroup's memory limit."""
    number, code = exit_status(message)
    sampled = f"; {format_bytes(rss)} resident when last sampled" if rss else ""
    who = f"pool process {pid}"
    if number == signal.SIGKILL:
        if oom_killed:
            return Death(Cause.OOM, f"{who} was killed by the kernel's OOM killer{sampled}")
        if oom_killed is None and rss and limit and rss >= NEAR_LIMIT * limit:
            return Death(
                Cause.OOM,
                f"{who} was killed by SIGKILL near the memory limit of {format_bytes(limit)} "
                f"(most likely the OOM killer: no OOM-kill count readable here){sampled}",
            )
        why = (
            ", not by the OOM killer (it killed nothing in this cgroup)"
            if oom_killed is False
            else "; no OOM-kill count is readable here"
        )
        return Death(Cause.SIGNAL, f"{who} was killed by {signal_name(number)}{why}{sampled}")
    if number is not None:
        return Death(Cause.SIGNAL, f"{who} was killed by {signal_name(number)}{sampled}")
    status = f"exit code {code}" if code is not None else message
    return Death(Cause.EXIT, f"{who} exited mid-partition ({status}){sampled}")


class OomKills:
    """The cgroup's OOM-kill count, followed from one death to the next: each death that
    finds the count above what was seen takes one kill as its own."""

    def __init__(self, read: Callable[[], int | None] = memory.oom_kill_count) -> None:
        self._read = read
        self._seen = read()

    def claim(self) -> bool | None:
        """True when the OOM killer killed a process since the last claim; None when the
        count cannot be read (or could not be, until now)."""
        count = self._read()
        if count is None or self._seen is None:
            self._seen = count
            return None
        if count > self._seen:
            self._seen += 1
            return True
        return False


def soft_time_limit_error(label: str, soft: int, hard: int) -> str:
    return (
        f"partition {label} ran past the soft time limit of {soft}s (ETL_TASK_TIME_LIMIT is "
        f"{hard}s) — raise ETL_TASK_TIME_LIMIT, or split big partitions"
    )


def hard_time_limit_error(label: str, seconds: float) -> str:
    return (
        f"partition {label} hit the hard time limit of {seconds:g}s (ETL_TASK_TIME_LIMIT) and "
        "its process was killed: the transform never got back to Python to stop at the soft "
        "limit (stuck in C code, or holding the GIL?) — raise ETL_TASK_TIME_LIMIT, or split "
        "big partitions"
    )


def attempts_exhausted_error(
    label: str,
    rows: int,
    attempts: int,
    *,
    cause: str | None,
    last: str | None,
    memory_ceiling: int,
    run_id: str,
) -> str:
    """Why a partition gave up after `attempts` attempts that died without finishing,
    from the last death its worker recorded (`cause`, and `last`: its words)."""
    head = f"partition {label} ({rows:,} rows): gave up after {attempts} attempts"
    resume = "etl-enqueue --resume " + run_id
    if cause == Cause.OOM:
        return (
            f"{head} that died without finishing, killed by the OOM killer each time — out "
            f"of memory? (last: {last}; memory ceiling {memory_ceiling:,} bytes) — give "
            f"workers more memory or lower their concurrency, then: {resume}"
        )
    if cause is not None:
        return (
            f"{head} that died without finishing (last: {last}) — see the worker's log for "
            f"why, then: {resume}"
        )
    return (
        f"{head} that died without finishing, with no cause recorded (their worker node was "
        f"lost, or could not reach the database) — see the workers' logs, then: {resume}"
    )


def owner_is_dead_here(owner: str | None, host: str) -> bool:
    """The lease owner is a process on this machine that no longer exists (OOM-killed)."""
    if not owner:
        return False
    parts = owner.split(":")
    if len(parts) < 3 or parts[0] != host or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
