"""etl-plan: measure the raw table and size the fleet before a run."""

from __future__ import annotations

import json
import os

import click

from etl_worker.cli.common import COMMAND, handle_errors, load_settings, setting_options
from etl_worker.ops.plan import SAMPLES, Machine, format_plan, make_plan
from etl_worker.units import parse_bytes


@click.command(**COMMAND)
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
@click.option("--hours", type=click.FloatRange(min=0.01), help="Target wall time: machines needed.")
@click.option(
    "--samples", type=click.IntRange(1), default=SAMPLES, help="Largest partitions to load."
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
    machine = Machine(parse_bytes(memory), cpus, hours)
    plan = make_plan(settings, machine, samples=samples, create_index=create_index)
    click.echo(json.dumps(plan.as_json(), default=str) if as_json else format_plan(plan))
