"""The error hierarchy. Every error the tool raises on purpose is an `EtlError`.

Two branches decide what the worker does with a failing partition:
- `PermanentPartitionError`: retrying cannot help (the transform raised, a value does not fit
  the target column, the partition is over the memory ceiling). The partition goes to `failed`.
- `TransientError`: the database or broker went away, a serialization failure. Retried with
  backoff.
Errors raised before anything is enqueued (`ConfigError`, `TableNotFound`, ...) are shown by
the CLI as one line and a non-zero exit code.
"""

from __future__ import annotations


class EtlError(Exception):
    """Root of every error etl-worker raises on purpose."""


class ConfigError(EtlError):
    """A setting is missing or malformed."""


class TableNotFound(EtlError):
    """A table named by the user does not exist."""


class ColumnNotFound(EtlError):
    """A column named by the user does not exist in its table."""


class RunNotFound(EtlError):
    """A run id that the audit table does not know."""


class ServiceUnavailable(EtlError):
    """Postgres or Redis does not answer at the configured URL."""


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


class TransientError(EtlError):
    """A failure that a retry with backoff may fix (connection lost, serialization failure)."""
