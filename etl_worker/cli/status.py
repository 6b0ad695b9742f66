"""etl-status: a run's progress, failures and timings, from the audit table."""

from __future__ import annotations

import json
import time

import click

from etl_worker.cli.common import (
    COMMAND,
    handle_errors,
    load_settings,
    reading_audit,
    run_or_latest,
    setting_options,
)
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
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until the run ends.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
@setting_options("database_url")
@handle_errors
def main(
    run_id: str | None,
    list_runs_: bool,
    limit: int,
    as_json: bool,
    watch: bool,
    interval: float,
    **overrides: str | None,
) -> None:
    """Report RUN_ID (default: the latest run), or --list the latest runs."""
    if list_runs_ and (run_id or watch):
        raise click.UsageError("--list shows every run: give no RUN_ID and no --watch")
    settings = load_settings(**overrides)
    with reading_audit(settings) as audit:
        if list_runs_:
            runs = list_runs(audit, limit)
            if as_json:
                click.echo(json.dumps([r.as_json() for r in runs], default=str))
            else:
                click.echo(format_run_list(runs))
            return
        run_id = run_or_latest(audit, run_id)
        while True:
            status = run_status(audit, run_id)
            if as_json:
                click.echo(json.dumps(status.as_json(), default=str))
            else:
                if watch:
                    click.clear()
                click.echo(format_status(status))
            if not watch or status.complete:
                break
            time.sleep(interval)
