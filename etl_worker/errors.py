"""The error hierarchy. Every error the tool raises on purpose is an `EtlError`.

Two branches decide what the worker does with a failing partition (`retry.classify` puts
every failure in one of them):
- `PermanentPartitionError`: retrying cannot help (the transform raised, a value does not fit
  the target column, the partition is over the memory ceiling). The partition goes to `failed`.
- `TransientError`: the database or broker went away, a serialization failure. Retried with
  backoff.
`RetryLater` is not a failure: the pipeline raises it to have the task layer send the
partition again later. Errors raised before anything is enqueued (`ConfigError`,
`TableNotFound`, ...) are shown by the CLI as one line and a non-zero exit code.
"""

from __future__ import annotations

import traceback


class EtlError(Exception):
    """Root of every error etl-worker raises on purpose."""


class ConfigError(EtlError):
    """A setting is missing or malformed."""


class TableNotFound(EtlError):
    """A table named by the user does not exist."""


class ColumnNotFound(EtlError):
    """A column named by the user does not exist in its table."""


class TransformNotAllowed(ConfigError):
    """The run's transform module is not on the allow-list (ETL_TRANSFORM_MODULES)."""


class RunNotFound(EtlError):
    """A run id that the audit table does not know."""


class RunInProgress(EtlError):
    """Another run on the same target table has partitions still to do: a second run would
    write the same partitions under it (and, partitioned by another column, beside it)."""


class ServiceUnavailable(EtlError):
    """Postgres or Redis does not answer at the configured URL."""


class WorkerCannotServe(EtlError):
    """This worker cannot process the partition, through no fault of the partition: its code
    does not match the database's audit schema (or the run). The attempt is not counted and
    the message comes back later, for a worker that can (or this one, once upgraded)."""


class AuditSchemaMissing(WorkerCannotServe):
    """The database has no audit schema: nothing was ever enqueued there (a command or a
    worker pointed at the wrong database)."""


class AuditSchemaMismatch(WorkerCannotServe):
    """The audit schema's version is not the one this code reads and writes."""


class TransformRefused(WorkerCannotServe):
    """This worker will not run the run's transform: its loaded code is not the version
    the run recorded, or the module is not on its allow-list, or it cannot import it.
    `repeated`: this worker already said so for the run (it says it once)."""

    def __init__(self, detail: str, *, repeated: bool = False) -> None:
        super().__init__(detail)
        self.repeated = repeated


class PermanentPartitionError(EtlError):
    """Processing this partition failed in a way a retry will not fix."""


class TransformError(PermanentPartitionError):
    """The user's transform raised, or returned something that is not a DataFrame."""


class SchemaMismatch(PermanentPartitionError):
    """The transform's output columns do not match the target table."""


class PartitionDataError(PermanentPartitionError):
    """A value could not be written to the target (type, range or constraint)."""


class MemoryCeilingExceeded(PermanentPartitionError):
    """The partition's data is larger than the configured memory ceiling."""


class AttemptsExhausted(PermanentPartitionError):
    """The partition was started too many times without finishing (worker killed each time)."""


class TimeLimitExceeded(PermanentPartitionError):
    """The partition ran past the task's soft time limit: a retry would take as long."""


class UnexpectedError(PermanentPartitionError):
    """An error nobody raised on purpose (a bug in the transform path): recorded as failed
    rather than retried in a loop."""


class SnapshotGone(PermanentPartitionError):
    """The run reads an exported snapshot (--snapshot) that no longer exists: the producer
    that held it ended."""


class TransientError(EtlError):
    """A failure that a retry with backoff may fix (connection lost, serialization failure)."""


class StatementTimedOut(TransientError):
    """Postgres cancelled a statement that ran, or waited for a lock, past its timeout (the
    write transaction's ETL_WRITE_TIMEOUT), or on a cancel request."""


class RetryLater(EtlError):
    """Send this partition again in `countdown` seconds: a retry after a transient error,
    or a deferral while another delivery holds the partition's lease. Raised by the
    pipeline, turned into a Celery retry by the task."""

    def __init__(self, detail: str, countdown: float) -> None:
        super().__init__(detail)
        self.detail = detail
        self.countdown = countdown


def traceback_last_line(exc: BaseException) -> str:
    """The exception as the last line of its traceback: `ValueError: bad revenue`."""
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip() if lines else repr(exc)
