"""etl-bench: measure etl-worker against the floors and the baselines; write BENCHMARKS.md."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from etl_worker.bench import scaling
from etl_worker.bench.report import write_report, write_scaling_chart
from etl_worker.bench.runner import PARTS, BenchOptions, command_line, run_bench, run_scaling
from etl_worker.cli.common import COMMAND, handle_errors, load_settings, setting_options

_DEFAULTS = BenchOptions()
_COUNT = click.IntRange(min=1)


def _sizes(value: str | tuple[int, ...]) -> tuple[int, ...]:
    """'1000000,10000000' -> (1000000, 10000000)."""
    if isinstance(value, tuple):
        return value
    try:
        sizes = tuple(int(v.replace("_", "")) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give row counts separated by commas") from None
    if any(size < 1 for size in sizes):
        raise click.BadParameter(f"{value!r}: every size must be at least 1 row")
    return sizes


#: (flag, type, help) of each measurement option; the default is BenchOptions'.
_OPTIONS: list[tuple[str, Any, str]] = [
    ("--rows", _COUNT, "Rows in the generated raw table."),
    ("--zips", _COUNT, "Distinct zip codes (Zipf-skewed); rows/zips is the mean partition."),
    ("--seed", int, "Random seed of the data."),
    ("--procs", _COUNT, "Processes for every line (pool, COPY streams, Celery concurrency)."),
    (
        "--to-sql-share",
        click.FloatRange(0, 1, min_open=True),
        "Share of the zips the to_sql baseline runs on (below 1: extrapolated, and said so).",
    ),
    ("--onerow-partitions", _COUNT, "One-row partitions run for the fixed cost per partition."),
    ("--enqueue-partitions", _COUNT, "Partitions etl-enqueue sends in the enqueue line."),
    ("--small-partitions", _COUNT, "Partitions of the small-partitions line."),
    ("--small-rows", _COUNT, "Rows per partition of the small-partitions line."),
    ("--round-trip-partitions", _COUNT, "Small partitions run through the round-trip counter."),
    ("--profile-partitions", _COUNT, "10,000-row partitions py-spy samples per transform."),
    (
        "--scale-partition-rows",
        _COUNT,
        "Mean rows per zip of the scaling tables (the same at every size).",
    ),
    (
        "--scaling-results",
        click.Path(path_type=Path, dir_okay=False),
        "JSON file the scaling series is recorded in, one entry per size.",
    ),
    (
        "--scaling-chart",
        click.Path(path_type=Path, dir_okay=False),
        "PNG chart of time and memory against rows (from every size recorded).",
    ),
    (
        "--cluster-dir",
        click.Path(path_type=Path, file_okay=False),
        "Where the benchmark's own Postgres cluster lives (kept: tables are seeded once).",
    ),
    (
        "--database",
        str,
        "Database the benchmark works in.",
    ),
    ("--output", click.Path(path_type=Path), "The report to write."),
    ("--chart", click.Path(path_type=Path), "The PNG chart to write (needs the [bench] extra)."),
    (
        "--profile-output",
        click.Path(path_type=Path, file_okay=False),
        "Where py-spy's raw samples of the profiled partitions go.",
    ),
]


def _measurement_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for flag, kind, text in reversed(_OPTIONS):
        default = getattr(_DEFAULTS, flag.lstrip("-").replace("-", "_"))
        func = click.option(flag, type=kind, default=default, show_default=True, help=text)(func)
    return func


@click.command(**COMMAND)
@_measurement_options
@click.option(
    "--only",
    type=click.Choice(PARTS),
    multiple=True,
    help="Run only this part (repeatable); the report then holds only what ran.",
)
@click.option(
    "--scale",
    type=_sizes,
    default="",
    metavar="ROWS,...",
    help="Run only the scaling series at these table sizes (comma-separated rows, e.g. "
    "1000000,10000000,50000000): wall time per row, peak RSS, enqueue and etl-status, "
    "recorded in --scaling-results and drawn in --scaling-chart.",
)
@click.option(
    "--own-postgres/--shared-postgres",
    default=_DEFAULTS.own_postgres,
    show_default=True,
    help="Measure on a Postgres cluster of the benchmark's own (its CPU alone, and "
    "pg_stat_statements), or on the server at ETL_DATABASE_URL.",
)
@click.option("--rebuild", is_flag=True, help="Generate the tables again even if they match.")
@click.option("--keep", is_flag=True, help="Keep the audit schema for inspection.")
@setting_options("database_url", "broker_url")
@handle_errors
def main(database_url: str | None, broker_url: str | None, **values: Any) -> None:
    """Build (or reuse) a generated table and measure, on it and with the same processes,
    on a Postgres cluster of the benchmark's own: the SQL and psql COPY pipe floors, the
    seed-style script (time to fail) and to_sql, the queue-less Pool script, etl-worker end
    to end through real Celery workers (identity and the default transform), the fixed cost
    per partition, small partitions and their round trips, enqueueing, memory, the
    read/write paths and a py-spy profile of 10,000-row partitions, with Postgres' CPU and
    statements per line. Writes --output and --chart. With --scale, runs only the scaling
    series instead.
    """
    settings = load_settings(database_url=database_url, broker_url=broker_url)
    values["only"] = tuple(values["only"])
    options = BenchOptions(command=command_line(), **values)
    say = lambda text: click.echo(text, err=True)  # noqa: E731
    if options.scale:
        data = run_scaling(settings, options, say=say)
        click.echo("\n".join(scaling.table_lines(data)))
        if write_scaling_chart(data, options.scaling_chart):
            click.echo(f"wrote {options.scaling_results} and {options.scaling_chart}")
        else:
            click.echo(f"wrote {options.scaling_results} (a chart needs two sizes or more)")
        return
    result = run_bench(settings, options, say=say)
    result.scaling = scaling.load(options.scaling_results)
    write_report(result)
    click.echo(f"wrote {options.output} and {options.chart}")
