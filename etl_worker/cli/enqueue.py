"""etl-enqueue: start a run (or resume one) and optionally wait for it."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack

import click

from etl_worker import defaults, incremental, producer
from etl_worker.cli.common import COMMAND, handle_errors, load_settings, setting_options, wait_for
from etl_worker.config import Settings, env_var
from etl_worker.reporting import testmode
from etl_worker.reporting.status import RunStatus, format_status
from etl_worker.reporting.verify import format_diff
from etl_worker.snapshot import ExportedSnapshot


@click.command(**COMMAND)
@click.argument("attach_run", metavar="[RUN_ID]", required=False)
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
    "--cancel",
    "cancel_run",
    metavar="RUN_ID",
    help="Cancel RUN_ID: its queued, started and retrying partitions become cancelled and "
    "workers skip them (--resume RUN_ID sends them again).",
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
    help="Index the partition column of the raw table, and of an existing target, first "
    "(CREATE INDEX CONCURRENTLY) when it has no index, instead of only warning.",
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
    "--snapshot",
    is_flag=True,
    help="With --wait: every partition reads the raw table as it was at enqueue (one exported "
    "snapshot, held open while waiting), so rows moving between zips meanwhile are written "
    "exactly once.",
)
@click.option(
    "--delete-vanished",
    is_flag=True,
    help="With --all-zips: first delete the target rows whose zip is no longer in the raw table "
    "(with --changed-since: enqueue those zips too; their tasks delete their rows).",
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
    "--wait",
    is_flag=True,
    help="Show progress until the run ends, sweeping it; exit 1 if any partition failed. "
    "With RUN_ID alone: follow that run again (after Ctrl-C), enqueueing nothing.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="With --wait (or --test): print only the final status, as one JSON document on "
    'stdout (with --test, the comparison under "test"); the run id goes to stderr.',
)
@setting_options()
@handle_errors
def main(
    attach_run: str | None,
    all_zips: bool,
    zips: str | None,
    zip_table: str | None,
    resume_run: str | None,
    cancel_run: str | None,
    dry_run: bool | None,
    test_mode: bool | None,
    truth_table: str | None,
    sample_table: str | None,
    key_column: str | None,
    create_index: bool,
    split_rows: int | None,
    split_column: str | None,
    snapshot: bool,
    delete_vanished: bool,
    contract: str | None,
    quarantine_table: str | None,
    changed_since: str | None,
    wait: bool,
    as_json: bool,
    **overrides: str | None,
) -> None:
    """Enqueue one Celery task per partition (zip code) of the raw table.

    Prints the run id alone on the first line of stdout (with --json, on stderr).
    `etl-enqueue --wait RUN_ID` follows a run already enqueued, as `etl-status RUN_ID --wait`
    does.
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
    if as_json and not (wait or settings.test_mode):
        raise click.UsageError("--json prints the final status: it needs --wait (or --test)")
    test_only = {"--truth-table": truth_table, "--sample-table": sample_table, "--key": key_column}
    given = [flag for flag, value in test_only.items() if value is not None]
    if given and not settings.test_mode:
        raise click.UsageError(f"{', '.join(given)} only means something with --test")
    chosen = [
        all_zips,
        zips is not None,
        zip_table is not None,
        resume_run is not None,
        cancel_run is not None,
    ]
    if attach_run is not None:
        if not wait or any(chosen) or settings.test_mode:
            raise click.UsageError(
                "RUN_ID alone follows a run: etl-enqueue --wait RUN_ID (to send its unfinished "
                "partitions again: etl-enqueue --resume RUN_ID)"
            )
        click.echo(attach_run, err=as_json)
        if _report(wait_for(settings, attach_run), as_json):
            sys.exit(1)
        return
    if sum(chosen) + settings.test_mode != 1:
        raise click.UsageError(
            "choose exactly one of --all-zips, --zips, --zip-table, --resume, --cancel, --test"
        )
    if changed_since is not None and not all_zips:
        raise click.UsageError("--changed-since goes with --all-zips")
    if cancel_run:
        cancelled = producer.cancel_run(settings, cancel_run)
        click.echo(cancel_run)
        click.echo(
            f"cancelled {cancelled:,} unfinished partition(s) of run {cancel_run}; resume it "
            f"with: etl-enqueue --resume {cancel_run}",
            err=True,
        )
        return
    if snapshot and (resume_run or not wait):
        raise click.UsageError(
            "--snapshot needs --wait (the snapshot lives while etl-enqueue waits) and a new "
            "run: a resumed run reads the raw table as it is now"
        )
    if delete_vanished and not all_zips:
        raise click.UsageError("--delete-vanished goes with --all-zips")
    with ExitStack() as held:
        _enqueue_and_wait(
            settings,
            resume_run,
            zips,
            zip_table,
            create_index,
            snapshot,
            changed_since,
            delete_vanished,
            wait,
            as_json,
            held,
        )


def _enqueue_and_wait(
    settings: Settings,
    resume_run: str | None,
    zips: str | None,
    zip_table: str | None,
    create_index: bool,
    snapshot: bool,
    changed_since: str | None,
    delete_vanished: bool,
    wait: bool,
    as_json: bool,
    held: ExitStack,
) -> None:
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
        exported = None
        if snapshot:
            exported = held.enter_context(
                ExportedSnapshot(settings.database_url, network_timeout=settings.network_timeout)
            )
        result = producer.enqueue_run(
            settings,
            zips=selected,
            zip_table=zip_table,
            create_index=create_index,
            snapshot=exported,
            delete_vanished=delete_vanished,
            changed_since=changed_since,
        )
    # With --json, stdout is one JSON document (the run id inside) for `| jq`.
    click.echo(result.run_id, err=as_json)
    verb = "re-enqueued" if result.resumed else "enqueued"
    click.echo(
        f"{verb} {result.partitions:,} partitions in {result.seconds:.2f}s "
        f"({settings.raw_table} -> {settings.target_table})",
        err=True,
    )
    if result.vanished is not None:
        click.echo(
            f"deleted {result.vanished.rows:,} target rows of {len(result.vanished.values):,} "
            f"zips no longer in {settings.raw_table}",
            err=True,
        )
    for note in result.notes:
        click.echo(note, err=True)
    if result.incremental is not None:
        click.echo(incremental.describe(result.incremental), err=True)
    if not (wait or comparison):
        return
    status = wait_for(settings, result.run_id)
    document = status.as_json()
    if not as_json:
        click.echo(format_status(status))
    failed = status.failed > 0
    if comparison is not None:
        diff = testmode.verify_test_run(settings, comparison)
        document["test"] = diff.as_json()
        if not as_json:
            click.echo(format_diff(diff))
        failed = failed or not diff.matches
    if as_json:
        click.echo(json.dumps(document, default=str))
    if failed:
        sys.exit(1)


def _report(status: RunStatus, as_json: bool) -> bool:
    """Print the run's final status; True when a partition failed (exit 1, unless the
    caller has more to print first)."""
    click.echo(json.dumps(status.as_json(), default=str) if as_json else format_status(status))
    return status.failed > 0
