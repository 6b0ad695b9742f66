"""etl-enqueue: start a run (or resume one) and optionally wait for it."""

from __future__ import annotations

import json
import sys

import click

from etl_worker import defaults, incremental, producer
from etl_worker.cli.common import handle_errors, load_settings, setting_options
from etl_worker.config import env_var
from etl_worker.reporting import testmode
from etl_worker.reporting.progress import wait_and_sweep
from etl_worker.reporting.status import format_status
from etl_worker.reporting.verify import format_diff


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--all-zips", is_flag=True, help="Every distinct value of the partition column.")
@click.option("--zips", help="Comma-separated partition values, e.g. 10016,10017.")
@click.option("--zip-table", help="Take the partition values from this table's partition column.")
@click.option(
    "--resume",
    "resume_run",
    metavar="RUN_ID",
    help="Send again the partitions of RUN_ID that did not finish (its own tables and transform).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    default=None,
    help="Read and transform, record statistics, write nothing to the target [env ETL_DRY_RUN].",
)
@click.option(
    "--test",
    "test_mode",
    is_flag=True,
    default=None,
    help="Run every zip of the sample table (etl-sample) into TARGET_test, wait, and compare it "
    f"with --truth-table; exit 1 on any difference [env {env_var('test_mode')}].",
)
@click.option(
    "--truth-table",
    help=f"With --test: the table the output must equal [env {env_var('truth_table')}].",
)
@click.option(
    "--sample-table",
    help=f"With --test: the sample to run on [env {env_var('sample_table')}; default "
    "RAW_TABLE_sample].",
)
@click.option(
    "--key",
    "key_column",
    help="With --test: the column pairing output and truth rows [env "
    f"{env_var('key_column')}; default the truth's primary key, else id].",
)
@click.option(
    "--create-index",
    is_flag=True,
    help="Index the raw table's partition column first (CREATE INDEX CONCURRENTLY) when it "
    "has no index, instead of only warning.",
)
@click.option(
    "--split-rows",
    type=click.IntRange(min=0),
    default=None,
    help="Split partitions over this many rows into sub-tasks; 0 = never "
    f"[env {env_var('split_rows')}; default {defaults.SPLIT_ROWS:,}].",
)
@click.option(
    "--split-column",
    default=None,
    help="NOT NULL integer column whose ranges split big partitions "
    f"[env {env_var('split_column')}; default the raw table's integer primary key].",
)
@click.option(
    "--contract",
    default=None,
    help="A pandera DataFrameModel or DataFrameSchema (module:Name) each partition's output must "
    "pass before it is written; a partition that breaks it fails, unwritten "
    f"[env {env_var('contract')}; needs the contracts extra].",
)
@click.option(
    "--quarantine",
    "quarantine_table",
    default=None,
    help="With --contract: write the offending rows (with the checks they failed) to this table "
    "and the others to the target, instead of failing the partition "
    f"[env {env_var('quarantine_table')}].",
)
@click.option(
    "--changed-since",
    metavar="RUN_ID",
    help="With --all-zips: enqueue only partitions that are new or whose raw rows, transform or "
    "target differ from their last finished run up to RUN_ID.",
)
@click.option(
    "--remove-vanished",
    is_flag=True,
    help="With --changed-since: partitions gone from the raw table are enqueued too, and their "
    "tasks delete their rows from the target.",
)
@click.option(
    "--wait", is_flag=True, help="Show progress until the run ends; exit 1 if any partition failed."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="With --wait, print the final status as JSON (with --test, then the diff as JSON).",
)
@setting_options()
@handle_errors
def main(
    all_zips: bool,
    zips: str | None,
    zip_table: str | None,
    resume_run: str | None,
    dry_run: bool | None,
    test_mode: bool | None,
    truth_table: str | None,
    sample_table: str | None,
    key_column: str | None,
    create_index: bool,
    split_rows: int | None,
    split_column: str | None,
    contract: str | None,
    quarantine_table: str | None,
    changed_since: str | None,
    remove_vanished: bool,
    wait: bool,
    as_json: bool,
    **overrides: str | None,
) -> None:
    """Enqueue one Celery task per partition (zip code) of the raw table.

    Prints the run id alone on the first line of stdout.
    """
    settings = load_settings(
        dry_run=dry_run,
        test_mode=test_mode,
        truth_table=truth_table,
        sample_table=sample_table,
        key_column=key_column,
        split_rows=split_rows,
        split_column=split_column,
        contract=contract,
        quarantine_table=quarantine_table,
        **overrides,
    )
    chosen = [all_zips, zips is not None, zip_table is not None, resume_run is not None]
    if sum(chosen) + settings.test_mode != 1:
        raise click.UsageError(
            "choose exactly one of --all-zips, --zips, --zip-table, --resume, --test"
        )
    if changed_since is not None and not all_zips:
        raise click.UsageError("--changed-since goes with --all-zips")
    if remove_vanished and changed_since is None:
        raise click.UsageError("--remove-vanished goes with --changed-since")
    comparison = None
    if settings.test_mode:
        # From here on the run's raw table is the sample and its target the test table.
        settings, comparison = testmode.prepare_test_run(settings)
    if resume_run:
        result = producer.resume_run(settings, resume_run)
    else:
        selected = None
        if zips is not None:
            selected = [z.strip() for z in zips.split(",") if z.strip()]
            if not selected:
                raise click.UsageError("--zips needs at least one value")
        result = producer.enqueue_run(
            settings,
            zips=selected,
            zip_table=zip_table,
            create_index=create_index,
            changed_since=changed_since,
            remove_vanished=remove_vanished,
        )
    click.echo(result.run_id)
    verb = "re-enqueued" if result.resumed else "enqueued"
    click.echo(
        f"{verb} {result.partitions:,} partitions in {result.seconds:.2f}s "
        f"({settings.raw_table} -> {settings.target_table})",
        err=True,
    )
    if result.incremental is not None:
        click.echo(incremental.describe(result.incremental), err=True)
    if not (wait or comparison):
        return
    status = wait_and_sweep(settings, result.run_id)
    click.echo(json.dumps(status.as_json(), default=str) if as_json else format_status(status))
    failed = status.failed > 0
    if comparison is not None:
        diff = testmode.verify_test_run(settings, comparison)
        click.echo(json.dumps(diff.as_json()) if as_json else format_diff(diff))
        failed = failed or not diff.matches
    if failed:
        sys.exit(1)
