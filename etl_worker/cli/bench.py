"""etl-bench: measure etl-worker against the floors and the baselines; write BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

import click

from etl_worker.bench.report import write_report
from etl_worker.bench.runner import BenchOptions, command_line, run_bench
from etl_worker.cli.common import handle_errors, load_settings, setting_options

_DEFAULTS = BenchOptions()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--rows",
    type=click.IntRange(min=1),
    default=_DEFAULTS.rows,
    show_default=True,
    help="Rows in the generated raw table.",
)
@click.option(
    "--zips",
    type=click.IntRange(min=1),
    default=_DEFAULTS.zips,
    show_default=True,
    help="Distinct zip codes (Zipf-skewed); rows/zips is the mean partition size.",
)
@click.option("--seed", default=_DEFAULTS.seed, show_default=True, help="Random seed of the data.")
@click.option(
    "--procs",
    type=click.IntRange(min=1),
    default=_DEFAULTS.procs,
    show_default=True,
    help="Processes for every line (pool size, COPY streams, Celery concurrency).",
)
@click.option(
    "--subset",
    type=click.FloatRange(0, 1, min_open=True),
    default=_DEFAULTS.subset,
    show_default=True,
    help="Share of the rows the seed-style and to_sql baselines run on, extrapolated.",
)
@click.option(
    "--onerow-partitions",
    type=click.IntRange(min=1),
    default=_DEFAULTS.onerow_partitions,
    show_default=True,
    help="One-row partitions run to measure the fixed cost per partition.",
)
@click.option(
    "--enqueue-partitions",
    type=click.IntRange(min=1),
    default=_DEFAULTS.enqueue_partitions,
    show_default=True,
    help="Partitions etl-enqueue sends in the enqueue measurement.",
)
@click.option(
    "--database",
    default=_DEFAULTS.database,
    show_default=True,
    help="Database (on the ETL_DATABASE_URL server) the benchmark works in.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=_DEFAULTS.output,
    show_default=True,
    help="The report to write.",
)
@click.option(
    "--chart",
    type=click.Path(path_type=Path),
    default=_DEFAULTS.chart,
    show_default=True,
    help="The PNG chart to write (needs the [bench] extra).",
)
@click.option("--rebuild", is_flag=True, help="Generate the tables again even if they match.")
@click.option("--keep", is_flag=True, help="Keep target tables and audit rows for inspection.")
@setting_options("database_url", "broker_url")
@handle_errors
def main(output: Path, chart: Path, **values: object) -> None:
    """Build (or reuse) a generated table and measure, on it and with the same processes:
    the SQL and binary COPY floors, the seed-style and to_sql baselines, etl-worker end to
    end through real Celery workers (identity and the default transform), the fixed cost
    per partition, enqueueing, memory, and the read/write paths. Writes --output and --chart.
    """
    settings = load_settings(
        database_url=values.pop("database_url"), broker_url=values.pop("broker_url")
    )
    options = BenchOptions(output=output, chart=chart, command=command_line(), **values)  # type: ignore[arg-type]
    result = run_bench(settings, options, say=lambda text: click.echo(text, err=True))
    write_report(result)
    click.echo(f"wrote {options.output} and {options.chart}")
