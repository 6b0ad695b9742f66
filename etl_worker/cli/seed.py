"""`etl-seed`: fill the raw table with generated, realistically messy companies."""

from __future__ import annotations

import sys

import click

from etl_worker.cli.common import COMMAND, handle_errors, load_settings, setting_options
from etl_worker.config import env_var
from etl_worker.devtools.seed import (
    DEFAULT_ROWS,
    DEFAULT_SEED,
    DEFAULT_ZIPS,
    PROGRESS_MIN_ROWS,
    seed_raw_table,
)


@click.command(**COMMAND)
@click.option(
    "--rows",
    type=click.IntRange(min=0),
    default=DEFAULT_ROWS,
    show_default=True,
    help="Rows to generate (ids 1..ROWS).",
)
@click.option(
    "--zips",
    type=click.IntRange(min=1),
    default=DEFAULT_ZIPS,
    show_default=True,
    help="Distinct zip codes (the partitions); rows per zip are Zipf-skewed.",
)
@click.option(
    "--seed",
    type=int,
    default=DEFAULT_SEED,
    show_default=True,
    help="Random seed: the same seed and sizes give the same table.",
)
@click.option(
    "--table",
    default=None,
    help=f"Table to replace, as table or schema.table [env {env_var('raw_table')}; "
    "default raw_companies].",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help=f"Draw a progress bar on stderr [default: on a terminal, for {PROGRESS_MIN_ROWS:,} "
    "rows or more].",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Drop the table even if etl-seed did not make it (its rows are lost).",
)
@setting_options("database_url")
@handle_errors
def main(
    rows: int,
    zips: int,
    seed: int,
    table: str | None,
    progress: bool | None,
    replace: bool,
    database_url: str | None,
) -> None:
    """Replace the raw table with generated rows: drop and recreate it (creating the database
    when missing), load the rows, index zip_code and ANALYZE. A table etl-seed did not make
    is left alone unless --replace.

    Prints one summary line: rows, zips, table size, seconds and rows per second.
    """
    settings = load_settings(database_url=database_url, raw_table=table)
    if progress is None:
        progress = rows >= PROGRESS_MIN_ROWS and sys.stderr.isatty()
    result = seed_raw_table(
        settings.database_url,
        rows=rows,
        zips=zips,
        seed=seed,
        table=settings.raw_table,
        progress=progress,
        replace=replace,
    )
    click.echo(result.summary())
