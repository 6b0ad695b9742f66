"""What every command shares: the settings options, and turning errors into one line."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from etl_worker.audit import Audit
from etl_worker.config import Settings, env_var
from etl_worker.errors import EtlError, RunNotFound

F = TypeVar("F", bound=Callable[..., Any])

#: (setting, flag, help) for the options that pick the database, broker, tables and
#: transform; each also reads its ETL_* variable (shown in --help).
_SETTING_OPTIONS = [
    ("database_url", "--database-url", "Postgres URL (raw, target and audit tables)."),
    (
        "broker_url",
        "--broker-url",
        "Broker URL, redis:// or amqp:// (a password in it is never logged).",
    ),
    ("raw_table", "--raw-table", "Table to read, as table or schema.table."),
    ("target_table", "--target-table", "Table to write; created like the raw table if missing."),
    ("partition_column", "--partition-column", "Column that splits the work into tasks."),
    (
        "transform",
        "--transform",
        "The pandas transform, as module:function (DataFrame -> DataFrame).",
    ),
    ("queue", "--queue", "Celery queue the tasks go to."),
]


def setting_options(*names: str) -> Callable[[F], F]:
    """Add the named settings as options; `None` means 'use ETL_* or the default'."""

    def decorate(func: F) -> F:
        for setting, flag, text in reversed(_SETTING_OPTIONS):
            if names and setting not in names:
                continue
            default = getattr(Settings, setting, None)
            func = click.option(
                flag,
                setting,
                default=None,
                help=f"{text} [env {env_var(setting)}; default {default}]",
            )(func)
        return func

    return decorate


def load_settings(**overrides: Any) -> Settings:
    return Settings.load(**overrides)


def handle_errors(func: F) -> F:
    """Print an EtlError as one line on stderr and exit 1; no traceback for expected errors."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        try:
            return func(*args, **kwargs)
        except EtlError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def run_or_latest(audit: Audit, run_id: str | None) -> str:
    """The run id given, or the latest run's when none is."""
    if run_id is not None:
        return run_id
    latest = audit.latest_run_id()
    if latest is None:
        raise RunNotFound("no runs in the audit table yet — start one with etl-enqueue")
    return latest
