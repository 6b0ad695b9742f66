"""The retry policy: which failures are retried, and how long each retry waits."""

from __future__ import annotations

import adbc_driver_manager
import psycopg
import pytest
from celery.exceptions import SoftTimeLimitExceeded

from etl_worker.config import Settings
from etl_worker.errors import (
    ConfigError,
    EtlError,
    MemoryCeilingExceeded,
    PartitionDataError,
    PermanentPartitionError,
    RetryLater,
    ServiceUnavailable,
    TimeLimitExceeded,
    TransformError,
    TransientError,
    UnexpectedError,
)
from etl_worker.retry import classify, compute_backoff, should_retry

TRANSIENT = [
    psycopg.errors.SerializationFailure("could not serialize access"),
    psycopg.errors.DeadlockDetected("deadlock detected"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.ConnectionFailure("connection failure"),  # any 08xxx
    psycopg.errors.TooManyConnections("too many clients"),
    psycopg.errors.LockNotAvailable("lock timeout"),
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    psycopg.OperationalError("server closed the connection unexpectedly"),
    adbc_driver_manager.OperationalError(
        "IO error", status_code=adbc_driver_manager.AdbcStatusCode.IO
    ),
    ServiceUnavailable("cannot connect to Postgres at postgresql://x/etl"),
    ConnectionResetError("reset by peer"),
    TimeoutError("timed out"),
    TransientError("raised as transient"),
]

PERMANENT = [
    (psycopg.errors.NumericValueOutOfRange("numeric field overflow"), PartitionDataError),
    (psycopg.errors.UniqueViolation("duplicate key"), PartitionDataError),
    (psycopg.errors.NotNullViolation("null value in column"), PartitionDataError),
    (
        adbc_driver_manager.DataError(
            "bad value", status_code=adbc_driver_manager.AdbcStatusCode.INVALID_DATA
        ),
        PartitionDataError,
    ),
    (TransformError("transform raised"), TransformError),
    (MemoryCeilingExceeded("too big"), MemoryCeilingExceeded),
    (SoftTimeLimitExceeded(), TimeLimitExceeded),
    (psycopg.errors.UndefinedTable("relation does not exist"), UnexpectedError),
    (ConfigError("a setting inside the transform path"), UnexpectedError),
    (ValueError("a bug"), UnexpectedError),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_failures_a_retry_can_fix_are_transient(exc: BaseException) -> None:
    assert isinstance(classify(exc), TransientError)


@pytest.mark.parametrize(("exc", "kind"), PERMANENT, ids=lambda e: type(e).__name__)
def test_failures_a_retry_cannot_fix_are_permanent(exc: BaseException, kind: type) -> None:
    error = classify(exc)

    assert isinstance(error, PermanentPartitionError)
    assert type(error) is kind


def test_an_error_that_already_says_its_kind_is_kept_as_it_is() -> None:
    transform, transient = TransformError("x"), TransientError("y")

    assert classify(transform) is transform
    assert classify(transient) is transient


def test_an_unexpected_error_keeps_its_type_and_message() -> None:
    assert str(classify(ValueError("bad revenue"))) == "unexpected ValueError: bad revenue"


def test_retry_later_is_an_etl_error_not_a_failure() -> None:
    later = RetryLater("leased by host:1:abc", 12.0)

    assert isinstance(later, EtlError)
    assert not isinstance(later, PermanentPartitionError | TransientError)
    assert (later.detail, later.countdown) == ("leased by host:1:abc", 12.0)


def test_transient_errors_are_retried_until_max_retries() -> None:
    settings = Settings.load({}, max_retries=2)
    transient = TransientError("connection lost")

    assert should_retry(transient, 0, settings)
    assert should_retry(transient, 1, settings)
    assert not should_retry(transient, 2, settings)
    assert not should_retry(TransformError("no"), 0, settings)


@pytest.mark.parametrize("retries", range(10))
def test_backoff_doubles_from_base_up_to_the_cap(retries: int) -> None:
    delay = min(60.0, 2.0 * 2**retries)
    low = compute_backoff(retries, base=2.0, cap=60.0, uniform=lambda a, b: a)
    high = compute_backoff(retries, base=2.0, cap=60.0, uniform=lambda a, b: b)

    assert (low, high) == (delay / 2, delay)


def test_backoff_stays_at_the_cap_however_long_the_database_is_away() -> None:
    assert compute_backoff(10_000, base=2.0, cap=60.0, uniform=lambda a, b: b) == 60.0


def test_backoff_jitter_spreads_a_fleet_over_the_random_half() -> None:
    delays = [compute_backoff(3, base=2.0, cap=60.0) for _ in range(500)]

    assert all(8.0 <= d <= 16.0 for d in delays)
    assert len(set(delays)) > 450  # not one instant for the whole fleet
    assert min(delays) < 8.5 and max(delays) > 15.5  # the whole random half is used
