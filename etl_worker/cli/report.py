"""etl-report: a run's one-file HTML report (summary, charts, failures)."""

from __future__ import annotations

from pathlib import Path

import click

from etl_worker.cli import common
from etl_worker.reporting.report import write_report


@click.command(**common.COMMAND)
@click.argument("run_id", required=False)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write [default: report-RUN_ID.html].",
)
@common.setting_options("database_url")
@common.handle_errors
def main(run_id: str | None, html_path: Path | None, **overrides: str | None) -> None:
    """Write RUN_ID's report (default: the latest run) as one self-contained HTML file:
    throughput over time, rows per zip, duration vs rows, memory per zip, and the failures."""
    settings = common.load_settings(**overrides)
    with common.reading_audit(settings) as audit:
        run_id = common.run_or_latest(audit, run_id)
        path = html_path or Path(f"report-{run_id}.html")
        report = write_report(audit, run_id, path)
    click.echo(
        f"wrote {path}: run {run_id}, {report.partitions:,} partitions, "
        f"{report.failures:,} failed ({path.stat().st_size / 1024:,.0f} KiB)"
    )
