"""etl-sample: make the sample raw table that `etl-enqueue --test` runs on."""

from __future__ import annotations

import click

from etl_worker.cli.common import COMMAND, handle_errors, load_settings, setting_options
from etl_worker.config import env_var
from etl_worker.reporting.sample import make_sample


@click.command(**COMMAND)
@click.option(
    "--zips",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="How many zips to draw (all of them if the raw table has fewer).",
)
@click.option(
    "--seed",
    type=int,
    default=42,
    show_default=True,
    help="Random seed: the same raw table and seed draw the same zips.",
)
@click.option(
    "--sample-table",
    default=None,
    help=f"Table to (re)create [env {env_var('sample_table')}; default RAW_TABLE_sample]. "
    "An existing table is replaced only if etl-sample made it.",
)
@setting_options("database_url", "raw_table", "partition_column")
@handle_errors
def main(zips: int, seed: int, sample_table: str | None, **overrides: str | None) -> None:
    """Copy every row of N zips, drawn reproducibly from the raw table, into a sample table.

    Prints one line: the sample table, its rows and the zips drawn.
    """
    settings = load_settings(sample_table=sample_table, **overrides)
    click.echo(make_sample(settings, zips=zips, seed=seed).summary())
