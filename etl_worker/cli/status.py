"""etl-status: a run's progress, failures and timings, from the audit table."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime

import click

from etl_worker.audit import RunSpec
from etl_worker.cli.common import (
    COMMAND,
    handle_errors,
    load_settings,
    reading_audit,
    run_or_latest,
    setting_options,
    wait_for,
)
from etl_worker.config import Settings
from etl_worker.reconnect import PatientAudit
from etl_worker.reporting.status import format_run_list, format_status, list_runs, run_status


@click.command(**COMMAND)
@click.argument("run_id", required=False)
@click.option(
    "--list",
    "list_runs_",
    is_flag=True,
    help="List the latest runs (id, tables, transform, state, counts, started, elapsed).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Runs --list shows."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--watch",
    is_flag=True,
    help="Refresh every --interval seconds until the run ends; exit 1 if any partition failed.",
)
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option(
    "--wait",
    is_flag=True,
    help="Follow the run with a progress bar and sweep it, as etl-enqueue --wait does "
    "(re-attach after Ctrl-C); exit 1 if any partition failed.",
)
@setting_options("database_url", "broker_url")
@handle_errors
def main(
    run_id: str | None,
    list_runs_: bool,
    limit: int,
    as_json: bool,
    watch: bool,
    interval: float,
    wait: bool,
    **overrides: str | None,
) -> None:
    """Report RUN_ID (default: the latest run), or --list the latest runs. A run that is
    not complete also shows what its workers say stops it (no worker on its queue, a
    database they cannot reach)."""
    if list_runs_ and (run_id or watch or wait):
        raise click.UsageError("--list shows every run: give no RUN_ID, no --watch, no --wait")
    settings = load_settings(**overrides)
    if list_runs_:
        with reading_audit(settings) as reader:
            runs = list_runs(reader, limit)
            if as_json:
                click.echo(json.dumps([r.as_json() for r in runs], default=str))
            else:
                click.echo(format_run_list(runs))
            return

    def notice(line: str) -> None:
        click.echo(f"{datetime.now():%H:%M:%S} {line}", err=True)

    # A fresh database: one line (AuditSchemaMissing), not a traceback.
    with reading_audit(settings) as reader:
        run_id = run_or_latest(reader, run_id)
    with PatientAudit(settings, notice) as audit:
        spec = audit.run(lambda a: a.get_run(run_id))
        if wait:
            audit.close()
            status = wait_for(settings, run_id)
            click.echo(
                json.dumps(status.as_json(), default=str) if as_json else format_status(status)
            )
            sys.exit(1 if status.failed else 0)
        ask_fleet = None
        fleet: list[str] = []
        while True:
            status = audit.run(lambda a: run_status(a, run_id))
            if status.complete:
                fleet = []
            else:
                ask_fleet = ask_fleet or _fleet_asker(settings, spec)
                fleet = ask_fleet()
            if as_json:
                click.echo(json.dumps(status.as_json() | {"fleet": fleet}, default=str))
            else:
                if watch:
                    click.clear()
                click.echo(format_status(status))
                for line in fleet:
                    click.echo(f"fleet      {line}")
            if not watch:
                break
            if status.complete:
                sys.exit(1 if status.failed else 0)
            time.sleep(interval)


def _fleet_asker(settings: Settings, spec: RunSpec) -> Callable[[], list[str]]:
    """What stops an incomplete run, asked of its fleet at most every ASK_EVERY_SECONDS (the
    last answer in between). Imported here, not at the top: Celery and pandas (through the
    producer) are most of a second of start-up that a finished run's report never needs
    (issue 13 goal 5: etl-status on a 40,000-partition run under a second)."""
    from etl_worker.celery_app import make_app
    from etl_worker.producer import run_queue
    from etl_worker.reporting.stalls import ASK_EVERY_SECONDS, fleet_problems

    app, queue = make_app(settings), run_queue(spec, settings)
    asked, answer = float("-inf"), []

    def ask() -> list[str]:
        nonlocal asked, answer
        if time.monotonic() - asked >= ASK_EVERY_SECONDS:
            answer, asked = fleet_problems(app, queue), time.monotonic()
        return answer

    return ask
