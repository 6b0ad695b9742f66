"""etl-demo: seed generated data, start local workers, run every zip, print the summary."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from etl_worker.cli.common import COMMAND, handle_errors, load_settings, setting_options
from etl_worker.devtools.demo import DemoOptions, run_demo


@click.command(**COMMAND)
@click.option("--rows", default=200_000, show_default=True, help="Rows to generate.")
@click.option("--zips", default=1_000, show_default=True, help="Distinct zip codes.")
@click.option("--seed", default=42, show_default=True, help="Random seed of the data.")
@click.option("--processes", default=2, show_default=True, help="Worker pool processes.")
@click.option(
    "--state-dir",
    default=".etl-demo",
    show_default=True,
    type=click.Path(),
    help="Worker log and embedded servers' data.",
)
@setting_options("database_url", "broker_url", "raw_table", "target_table", "transform")
@handle_errors
def main(
    rows: int, zips: int, seed: int, processes: int, state_dir: str, **overrides: str | None
) -> None:
    """Run the whole pipeline once on generated data (falls back to embedded Postgres and
    Redis when none answer at the configured URLs)."""
    settings = load_settings(**overrides)
    options = DemoOptions(rows, zips, seed, processes, Path(state_dir))
    status = run_demo(
        settings, options, echo=click.echo, say=lambda text: click.echo(text, err=True)
    )
    sys.exit(1 if status.failed else 0)
