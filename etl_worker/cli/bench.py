"""etl-bench: measure etl-worker against the floors and the baselines; write BENCHMARKS.md."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from etl_worker.bench.report import write_report
from etl_worker.bench.runner import BenchOptions, command_line, run_bench
from etl_worker.cli.common import handle_errors, load_settings, setting_options

_DEFAULTS = BenchOptions()
_COUNT = click.IntRange(min=1)

#: (flag, type, help) of each measurement option; the default is BenchOptions'.
_OPTIONS: list[tuple[str, Any, str]] = [
    ("--rows", _COUNT, "Rows in the generated raw table."),
    ("--zips", _COUNT, "Distinct zip codes (Zipf-skewed); rows/zips is the mean partition."),
    ("--seed", int, "Random seed of the data."),
    ("--procs", _COUNT, "Processes for every line (pool, COPY streams, Celery concurrency)."),
    (
        "--subset",
        click.FloatRange(0, 1, min_open=True),
        "Share of the rows the seed-style and to_sql baselines run on, then extrapolated.",
    ),
    ("--onerow-partitions", _COUNT, "One-row partitions run for the fixed cost per partition."),
    ("--enqueue-partitions", _COUNT, "Partitions etl-enqueue sends in the enqueue line."),
    ("--database", str, "Database (on the ETL_DATABASE_URL server) the benchmark works in."),
    ("--output", click.Path(path_type=Path), "The report to write."),
    ("--chart", click.Path(path_type=Path), "The PNG chart to write (needs the [bench] extra)."),
]


def _measurement_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for flag, kind, text in reversed(_OPTIONS):
        default = getattr(_DEFAULTS, flag.lstrip("-").replace("-", "_"))
        func = click.option(flag, type=kind, default=default, show_default=True, help=text)(func)
    return func


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_measurement_options
@click.option("--rebuild", is_flag=True, help="Generate the tables again even if they match.")
@click.option("--keep", is_flag=True, help="Keep target tables and audit rows for inspection.")
@setting_options("database_url", "broker_url")
@handle_errors
def main(database_url: str | None, broker_url: str | None, **values: Any) -> None:
    """Build (or reuse) a generated table and measure, on it and with the same processes:
    the SQL and binary COPY floors, the seed-style and to_sql baselines, etl-worker end to
    end through real Celery workers (identity and the default transform), the fixed cost
    per partition, enqueueing, memory, and the read/write paths. Writes --output and --chart.
    """
    settings = load_settings(database_url=database_url, broker_url=broker_url)
    options = BenchOptions(command=command_line(), **values)
    result = run_bench(settings, options, say=lambda text: click.echo(text, err=True))
    write_report(result)
    click.echo(f"wrote {options.output} and {options.chart}")
