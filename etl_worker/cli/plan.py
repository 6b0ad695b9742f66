"""etl-plan: measure the raw table and size the fleet before a run."""

from __future__ import annotations

import json
import os

import click

from etl_worker.cli.common import handle_errors, load_settings, setting_options
from etl_worker.config import parse_bytes
from etl_worker.plan import SAMPLES, format_plan, make_plan


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--memory",
    default="16GiB",
    show_default=True,
    help="Memory of one worker machine (e.g. 16GiB, 64GB).",
)
@click.option(
    "--cpus",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="this machine's",
    help="CPUs of one worker machine.",
)
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Target wall time of the run: prints how many machines it takes.",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=SAMPLES,
    show_default=True,
    help="How many of the largest partitions to load and measure.",
)
@click.option(
    "--create-index",
    is_flag=True,
    help="Index the partition column first when it has no index (CREATE INDEX CONCURRENTLY).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@setting_options("database_url", "raw_table", "target_table", "partition_column", "transform")
@handle_errors
def main(
    memory: str,
    cpus: int,
    hours: float | None,
    samples: int,
    create_index: bool,
    as_json: bool,
    **overrides: str | None,
) -> None:
    """Measure partition sizes and the memory and speed of the largest partitions through
    the transform, then recommend pool processes per machine and machines for --hours.
    Writes nothing (except the index, with --create-index)."""
    settings = load_settings(**overrides)
    plan = make_plan(
        settings,
        memory_bytes=parse_bytes(memory),
        cpus=cpus,
        hours=hours,
        samples=samples,
        create_index=create_index,
    )
    click.echo(json.dumps(plan.as_json(), default=str) if as_json else format_plan(plan))
