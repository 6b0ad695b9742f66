"""etl-sweep: re-enqueue partitions whose worker died or whose message was lost."""

from __future__ import annotations

import time
from datetime import datetime

import click

from etl_worker.audit import Audit
from etl_worker.cli.common import (
    COMMAND,
    handle_errors,
    load_settings,
    reading_audit,
    setting_options,
)
from etl_worker.config import env_var
from etl_worker.db import connect
from etl_worker.reconnect import PatientAudit
from etl_worker.reporting.status import run_status
from etl_worker.sweeper import PeriodicSweep, SweepResult, sweep


@click.command(**COMMAND)
@click.argument("run_id", required=False)
@click.option("--watch", is_flag=True, help="Sweep again every --interval seconds.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=None,
    help=f"Seconds between sweeps with --watch [env {env_var('sweep_interval')}; default 30].",
)
@setting_options("database_url", "broker_url", "queue")
@handle_errors
def main(run_id: str | None, watch: bool, interval: float | None, **overrides: str | None) -> None:
    """Send again the partitions of RUN_ID (default: of every run) that nothing else will:
    those whose lease expired (their worker died), and those whose message is in no Redis
    queue nor unacked set ETL_SWEEP_AFTER seconds after it was sent (lost).

    Prints one line per run and cause. With --watch, sweeps until RUN_ID is complete (without
    RUN_ID, until interrupted), and a failed sweep is reported and tried again.
    """
    settings = load_settings(sweep_interval=interval, **overrides)
    # A fresh database: one line and exit 1, not a warning every interval forever.
    with reading_audit(settings) as audit:
        if run_id is not None:
            audit.get_run(run_id)  # RunNotFound, clearly
    if not watch:
        with connect(settings.database_url) as conn:
            result = sweep(settings, conn, run_id=run_id)
        _print(result)
        if not result.requeued:
            click.echo(
                f"nothing to re-enqueue: no expired leases; {result.checked} partition(s) "
                f"waiting over {result.lost_after}s, each with its message in Redis"
            )
        return
    periodic = PeriodicSweep(settings, run_id, report=_print)
    # The database restarting is waited out with a notice (reconnect.py): on one node this
    # may be the only sweeper, and the run goes on.
    with PatientAudit(settings, _notice) as audit:
        while True:
            periodic()
            if run_id is not None and audit.run(lambda a: _complete(a, run_id)):
                return
            time.sleep(settings.sweep_interval)


def _print(result: SweepResult) -> None:
    for line in result.lines():
        _notice(line)


def _notice(line: str) -> None:
    click.echo(f"{datetime.now():%H:%M:%S} {line}")


def _complete(audit: Audit, run_id: str) -> bool:
    return run_status(audit, run_id, details=False).complete
