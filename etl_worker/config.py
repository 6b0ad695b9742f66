"""One typed settings object for the whole tool, and the only reader of `os.environ`.

Every setting has an `ETL_*` environment variable; CLI flags override it. Secrets can come
from files instead (`ETL_DATABASE_URL_FILE`, `ETL_BROKER_URL_FILE`, as Docker and Kubernetes
secrets mount them), so they never sit in a compose file or a process listing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from etl_worker import defaults
from etl_worker.errors import ConfigError
from etl_worker.units import parse_bytes
from etl_worker.urls import check_broker_url, check_database_url, check_userinfo
from etl_worker.urls import redact_url as redact_url  # callers import it from config

ENV_PREFIX = "ETL_"
#: Keepalive idle time, interval and PROBES (2) unanswered probes, one second each at least.
MIN_NETWORK_TIMEOUT = 3.0


def _env(name: str, parse: Callable[[str], Any] = str) -> Any:
    """Field metadata: which environment variable feeds a setting, and how to parse it."""
    return {"env": ENV_PREFIX + name, "parse": parse}


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"not a boolean: {text!r} (use true or false)")


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Build it with `Settings.load()`."""

    # repr=False: a traceback or log line that shows the settings never shows a password.
    database_url: str = field(
        default=defaults.DATABASE_URL, metadata=_env("DATABASE_URL"), repr=False
    )
    broker_url: str = field(default=defaults.BROKER_URL, metadata=_env("BROKER_URL"), repr=False)
    raw_table: str = field(default=defaults.RAW_TABLE, metadata=_env("RAW_TABLE"))
    target_table: str = field(default=defaults.TARGET_TABLE, metadata=_env("TARGET_TABLE"))
    partition_column: str = field(
        default=defaults.PARTITION_COLUMN, metadata=_env("PARTITION_COLUMN")
    )
    transform: str = field(default=defaults.TRANSFORM, metadata=_env("TRANSFORM"))
    #: Module prefixes workers may import transforms from, besides the shipped
    #: etl_worker.transforms (fingerprint.py): whoever can insert a run chooses the module.
    transform_modules: tuple[str, ...] = field(
        default=(), metadata=_env("TRANSFORM_MODULES", _parse_list)
    )
    queue: str = field(default=defaults.QUEUE, metadata=_env("QUEUE"))
    audit_schema: str = field(default=defaults.AUDIT_SCHEMA, metadata=_env("AUDIT_SCHEMA"))
    #: Prefix for every Redis key kombu uses, so several fleets (or test runs) can share
    #: one Redis without seeing each other's queues.
    redis_key_prefix: str = field(default="", metadata=_env("REDIS_KEY_PREFIX"))
    task_time_limit: int = field(
        default=defaults.TASK_TIME_LIMIT, metadata=_env("TASK_TIME_LIMIT", int)
    )
    visibility_timeout: int = field(
        default=defaults.VISIBILITY_TIMEOUT, metadata=_env("VISIBILITY_TIMEOUT", int)
    )
    lease_seconds: float = field(
        default=defaults.LEASE_SECONDS, metadata=_env("LEASE_SECONDS", float)
    )
    #: Seconds before a queued partition whose message is nowhere in Redis counts as lost;
    #: 0 means ETL_VISIBILITY_TIMEOUT plus a margin (see `lost_message_after`).
    sweep_after: int = field(default=0, metadata=_env("SWEEP_AFTER", int))
    #: Seconds one statement of a partition's write may run or wait for a lock; 0 means
    #: derived from the lease and the task time limit (see `write_timeout_seconds`).
    write_timeout: int = field(default=0, metadata=_env("WRITE_TIMEOUT", int))
    sweep_interval: float = field(
        default=defaults.SWEEP_INTERVAL, metadata=_env("SWEEP_INTERVAL", float)
    )
    #: A connection whose peer went silent is given up within about this many seconds
    #: (TCP keepalives, TCP user timeout, connect and Redis command timeouts: network.py).
    network_timeout: float = field(
        default=defaults.NETWORK_TIMEOUT, metadata=_env("NETWORK_TIMEOUT", float)
    )
    max_attempts: int = field(default=defaults.MAX_ATTEMPTS, metadata=_env("MAX_ATTEMPTS", int))
    #: RabbitMQ only (x-delivery-limit of the quorum queues); every party must share it.
    delivery_limit: int = field(
        default=defaults.DELIVERY_LIMIT, metadata=_env("DELIVERY_LIMIT", int)
    )
    max_retries: int = field(default=defaults.MAX_RETRIES, metadata=_env("MAX_RETRIES", int))
    retry_backoff_base: float = field(
        default=defaults.RETRY_BACKOFF_BASE, metadata=_env("RETRY_BACKOFF_BASE", float)
    )
    retry_backoff_max: float = field(
        default=defaults.RETRY_BACKOFF_MAX, metadata=_env("RETRY_BACKOFF_MAX", float)
    )
    memory_ceiling_bytes: int = field(
        default=defaults.MEMORY_CEILING_BYTES, metadata=_env("MEMORY_CEILING", parse_bytes)
    )
    dry_run: bool = field(default=False, metadata=_env("DRY_RUN", _parse_bool))
    #: Whether an --all-zips run records every partition's raw fingerprint, what a later
    #: `--changed-since` run compares with (fingerprints.py). It is one GROUP BY pass over
    #: the raw table that hashes every row's text: 16% of Postgres' time in etl-bench's
    #: identity line (docs/scaling.md). Off, a later incremental run compared with this one
    #: re-runs every partition it wrote (reason "not_fingerprinted"), never skips one.
    raw_fingerprints: bool = field(default=True, metadata=_env("RAW_FINGERPRINTS", _parse_bool))
    #: Test mode (etl-enqueue --test): read the sample table, write the test target, and
    #: compare it with the truth table.
    test_mode: bool = field(default=False, metadata=_env("TEST_MODE", _parse_bool))
    #: The source of truth a test run's output must equal (e.g. the laptop script's output).
    truth_table: str = field(default="", metadata=_env("TRUTH_TABLE"))
    #: The sample raw table made by etl-sample; empty means `<raw table>_sample`.
    sample_table: str = field(default="", metadata=_env("SAMPLE_TABLE"))
    #: Column that pairs a test output row with its truth row; empty means the truth
    #: table's primary key, else `id`.
    key_column: str = field(default="", metadata=_env("KEY_COLUMN"))
    #: Fleet sizing (etl_worker.ops.autoscale, etl-plan, etl-metrics).
    process_memory_bytes: int = field(
        default=defaults.PROCESS_MEMORY_BYTES, metadata=_env("PROCESS_MEMORY", parse_bytes)
    )
    worker_memory_bytes: int = field(
        default=defaults.WORKER_MEMORY_BYTES, metadata=_env("WORKER_MEMORY", parse_bytes)
    )
    max_memory_per_child_bytes: int = field(
        default=defaults.MAX_MEMORY_PER_CHILD_BYTES,
        metadata=_env("MAX_MEMORY_PER_CHILD", parse_bytes),
    )
    metrics_namespace: str = field(
        default=defaults.METRICS_NAMESPACE, metadata=_env("METRICS_NAMESPACE")
    )
    split_rows: int = field(default=defaults.SPLIT_ROWS, metadata=_env("SPLIT_ROWS", int))
    #: Integer column whose ranges split a big partition; empty means the raw table's
    #: single-column integer primary key.
    split_column: str = field(default="", metadata=_env("SPLIT_COLUMN"))

    #: A pandera DataFrameModel or DataFrameSchema (`module:Name`) every partition's output
    #: must pass before it is written (contracts.py); empty: no contract.
    contract: str = field(default="", metadata=_env("CONTRACT"))
    #: With a contract: the table its offending rows go to, instead of failing the partition.
    quarantine_table: str = field(default="", metadata=_env("QUARANTINE_TABLE"))
    #: Offending rows kept per failed check in the audit row (a sample, not all of them).
    contract_sample_rows: int = field(default=5, metadata=_env("CONTRACT_SAMPLE_ROWS", int))

    def __post_init__(self) -> None:
        check_database_url(self.database_url, env_var("database_url"))
        check_userinfo(self.broker_url, env_var("broker_url"))
        check_broker_url(self.broker_url, env_var("broker_url"))
        if self.visibility_timeout <= self.task_time_limit:
            raise ConfigError(
                f"ETL_VISIBILITY_TIMEOUT ({self.visibility_timeout}s) must exceed "
                f"ETL_TASK_TIME_LIMIT ({self.task_time_limit}s), or Redis redelivers tasks "
                "that are still running"
            )
        if self.sweep_after and self.sweep_after <= self.visibility_timeout:
            raise ConfigError(
                f"ETL_SWEEP_AFTER ({self.sweep_after}s) must exceed ETL_VISIBILITY_TIMEOUT "
                f"({self.visibility_timeout}s), or the sweeper re-enqueues messages Redis is "
                "about to redeliver itself"
            )
        countdown = max(self.lease_seconds + 1, self.retry_backoff_max)
        if countdown >= self.visibility_timeout:
            raise ConfigError(
                f"ETL_LEASE_SECONDS and ETL_RETRY_BACKOFF_MAX ({countdown:g}s at most) must stay "
                f"below ETL_VISIBILITY_TIMEOUT ({self.visibility_timeout}s): a retry waiting "
                "longer than that in a worker is redelivered by Redis while it waits"
            )
        if self.network_timeout < MIN_NETWORK_TIMEOUT:
            raise ConfigError(
                f"ETL_NETWORK_TIMEOUT ({self.network_timeout:g}s) must be at least "
                f"{MIN_NETWORK_TIMEOUT}s: TCP keepalive probes tick in whole seconds"
            )
        if self.write_timeout and not (
            self.lease_seconds <= self.write_timeout < self.task_time_limit
        ):
            raise ConfigError(
                f"ETL_WRITE_TIMEOUT ({self.write_timeout}s) must be at least ETL_LEASE_SECONDS "
                f"({self.lease_seconds:g}s), so a writer waiting for another outlasts one that "
                f"froze, and below ETL_TASK_TIME_LIMIT ({self.task_time_limit}s), so it waits "
                "no longer than its own task may run"
            )
        if self.sweep_interval <= 0:
            raise ConfigError("ETL_SWEEP_INTERVAL must be positive")
        if self.max_attempts < 1:
            raise ConfigError("ETL_MAX_ATTEMPTS must be at least 1")
        if self.delivery_limit <= self.max_attempts:
            raise ConfigError(
                f"ETL_DELIVERY_LIMIT ({self.delivery_limit}) must exceed ETL_MAX_ATTEMPTS "
                f"({self.max_attempts}): RabbitMQ would drop a message before the audit "
                "table gives its partition up and says why"
            )
        if self.lease_seconds <= 0:
            raise ConfigError("ETL_LEASE_SECONDS must be positive")
        if self.process_memory_bytes <= 0:
            raise ConfigError("ETL_PROCESS_MEMORY must be positive (e.g. 1GiB)")
        if self.quarantine_table and not self.contract:
            raise ConfigError("ETL_QUARANTINE_TABLE needs a contract (ETL_CONTRACT) to check")
        if self.split_rows < 0:
            raise ConfigError("ETL_SPLIT_ROWS must be 0 (no splitting) or a row count")

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `ETL_*` variables (or `ETL_*_FILE` files), then non-None overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name, parse = f.metadata["env"], f.metadata["parse"]
            raw = env.get(name)
            if raw is None and env.get(name + "_FILE"):
                path = Path(env[name + "_FILE"])
                try:
                    raw = path.read_text().strip()
                except OSError as exc:
                    raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc
            if raw is not None and raw != "":
                try:
                    values[f.name] = parse(raw)
                except ValueError as exc:
                    raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def soft_time_limit(self) -> int:
        """Raised inside the task a little before the hard kill, so it can roll back cleanly:
        10% before it, at least 1 s and at most 60 s before."""
        margin = max(1, min(60, self.task_time_limit // 10))
        return max(1, self.task_time_limit - margin)

    @property
    def write_timeout_seconds(self) -> float:
        """How long one statement of a partition's write transaction may run, or wait for a
        lock, before Postgres cancels it (its statement_timeout and lock_timeout): what ends
        the transaction of a writer frozen mid-statement. ETL_WRITE_TIMEOUT, else the
        smaller of WRITE_TIMEOUT and a quarter of the task time limit, never below the
        lease: a writer frozen between statements is ended after a lease of idleness, and
        the one waiting for its locks must outlast that."""
        if self.write_timeout:
            return float(self.write_timeout)
        return max(self.lease_seconds, min(defaults.WRITE_TIMEOUT, self.task_time_limit / 4))

    @property
    def heartbeat_network_timeout(self) -> float:
        """The lease renewer's connection (the worker main process's keeper, or the heartbeat
        without Celery) gives up on a silent database within half a lease at most, so a
        renewal stuck on a dead socket still reconnects and renews in time."""
        return max(MIN_NETWORK_TIMEOUT, min(self.network_timeout, self.lease_seconds / 2))

    @property
    def lost_message_after(self) -> int:
        """Age (seconds since last sent) at which a queued partition's missing message is
        lost for good: always above the visibility timeout (see sweeper.py)."""
        return self.sweep_after or self.visibility_timeout + defaults.SWEEP_AFTER_MARGIN

    @property
    def sweep_queue(self) -> str:
        """The queue of the periodic sweep task: its own, so a sweep never waits behind the
        partitions of a long run (workers that should sweep consume it too)."""
        return f"{self.queue}.sweep"


def env_var(setting: str) -> str:
    """The environment variable name of a setting, for help texts and error messages."""
    for f in fields(Settings):
        if f.name == setting:
            return str(f.metadata["env"])
    raise KeyError(setting)
