"""Retry policy: which failures of a partition a retry can fix, and how long to wait first.

Every failure is one of two kinds (`classify`):
- transient (`TransientError`): the database went away, a serialization failure, a
  deadlock, a lock timeout. Retried after `compute_backoff`, at most ETL_MAX_RETRIES times
  (`should_retry`); then it fails like a permanent one.
- permanent (`PermanentPartitionError`): the transform raised, a value does not fit the
  target, the partition is over the memory ceiling or ran past the soft time limit — and
  any error nobody raised on purpose (a bug), which is recorded rather than looped on.

Which driver errors are transient is read from their SQLSTATE by `db.database_error`, next
to the drivers that raise them. How the pipeline asks for the retry is `errors.RetryLater`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from etl_worker.config import Settings
from etl_worker.db import database_error
from etl_worker.errors import (
    PermanentPartitionError,
    ServiceUnavailable,
    TimeLimitExceeded,
    TransientError,
    UnexpectedError,
    traceback_last_line,
)

#: Past this many retries the delay stops doubling (it is at the cap long before): keeps
#: base * 2**n a float however long the database stays away.
MAX_EXPONENT = 32


def classify(exc: BaseException) -> TransientError | PermanentPartitionError:
    """The kind of failure `exc` is: itself when it already says, else a new error that
    does (its message is the cause's; the caller adds which partition)."""
    if isinstance(exc, TransientError | PermanentPartitionError):
        return exc
    if is_soft_time_limit(exc):
        return TimeLimitExceeded(str(exc) or "soft time limit exceeded")
    if isinstance(exc, ServiceUnavailable):  # our own wrapper of a failed connect
        return TransientError(str(exc))
    error = database_error(exc)
    if error is not None:
        return error
    return UnexpectedError(f"unexpected {traceback_last_line(exc)}")


def should_retry(error: BaseException, retries: int, settings: Settings) -> bool:
    """True for a transient error with retries left (`retries`: those already made)."""
    return isinstance(error, TransientError) and retries < settings.max_retries


def compute_backoff(
    retries: int,
    *,
    base: float,
    cap: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before the next retry: base * 2**retries, capped at `cap`, half of it
    fixed and half random ("equal jitter"). The random half spreads out a fleet that lost
    its database at once, so it does not come back at once; the fixed half keeps every
    retry at least half its delay away."""
    delay = min(cap, base * 2 ** min(retries, MAX_EXPONENT))
    return delay / 2 + uniform(0, delay / 2)


def backoff(retries: int, settings: Settings) -> float:
    """`compute_backoff` with the configured base and cap (ETL_RETRY_BACKOFF_BASE/_MAX)."""
    return compute_backoff(
        retries, base=settings.retry_backoff_base, cap=settings.retry_backoff_max
    )


def is_soft_time_limit(exc: BaseException) -> bool:
    """The task's soft time limit fired (billiard's SoftTimeLimitExceeded, known by name
    so this module imports nothing of Celery's pool)."""
    return type(exc).__name__ == "SoftTimeLimitExceeded"
