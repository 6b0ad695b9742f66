"""What every command shares: the settings options, and turning errors into one line."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from etl_worker.audit import Audit
from etl_worker.config import Settings, env_var
from etl_worker.db import connect
from etl_worker.errors import EtlError, RunNotFound
from etl_worker.reporting.status import RunStatus

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


class EtlCommand(click.Command):
    """A click command whose usage errors are one line, like every other error: what is
    wrong and where the help is (click's own take four lines, the usage first)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as exc:
            name = exc.ctx.command_path if exc.ctx else self.name
            click.echo(f"error: {exc.format_message().rstrip('.')} — see {name} --help", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)


#: What every command passes to @click.command.
COMMAND: dict[str, Any] = {
    "cls": EtlCommand,
    "context_settings": {"help_option_names": ["-h", "--help"]},
}


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


@contextlib.contextmanager
def reading_audit(settings: Settings) -> Iterator[Audit]:
    """The audit of ETL_DATABASE_URL for a command that reads it (etl-status, etl-report,
    etl-sweep): `AuditSchemaMissing` in one line on a fresh database."""
    with connect(settings.database_url) as conn:
        yield Audit(conn, settings.audit_schema).require_schema()


def run_or_latest(audit: Audit, run_id: str | None) -> str:
    """The run id given, or the latest run's when none is."""
    if run_id is not None:
        return run_id
    latest = audit.latest_run_id()
    if latest is None:
        raise RunNotFound("no runs in the audit table yet — start one with etl-enqueue")
    return latest


def wait_for(settings: Settings, run_id: str) -> RunStatus:
    """`--wait`: follow the run to its end, sweeping it. Ctrl-C stops only the waiting (the
    run goes on in the workers) and says how to come back to it."""
    # Imported here: the progress bar pulls in the producer, the sweeper and pandas, most
    # of a second that commands which never wait (a finished run's etl-status) need not pay.
    from etl_worker.reporting.progress import wait_and_sweep

    try:
        return wait_and_sweep(settings, run_id)
    except KeyboardInterrupt:
        click.echo(
            f"interrupted: run {run_id} goes on without this command — follow it again "
            f"with: etl-status {run_id} --wait",
            err=True,
        )
        sys.exit(130)
