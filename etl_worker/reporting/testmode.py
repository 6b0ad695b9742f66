"""Test mode (the seed's TEST_FLAG): run the transform over a sample of the raw table into a
separate output table, then compare that output with a source-of-truth table.

The real target is never written. The run reads the sample table (`etl-sample`) and writes
`<target>_test`, which is recreated empty before every test run so that it holds this run's
rows only; `verify.py` then compares it with the truth table on the sampled zips.
"""

from __future__ import annotations

from dataclasses import dataclass

from etl_worker.config import Settings
from etl_worker.db import TableName, connect, table_exists
from etl_worker.errors import ConfigError, TableNotFound
from etl_worker.producer import create_target
from etl_worker.reporting.sample import drop_scratch_table, mark_scratch_table, sample_table_name
from etl_worker.reporting.verify import TableDiff, choose_key, compare_tables

OUTPUT_SUFFIX = "_test"


@dataclass(frozen=True)
class Comparison:
    """What a test run reads, writes, and is compared with."""

    sample: TableName
    output: TableName
    truth: TableName
    key: str


def output_table_name(settings: Settings) -> TableName:
    """Where a test run writes: `<target table>_test`."""
    return TableName.parse(settings.target_table).with_suffix(OUTPUT_SUFFIX)


def prepare_test_run(settings: Settings) -> tuple[Settings, Comparison]:
    """Check the tables, recreate the empty output table, and return the settings of the
    test run (the sample as its raw table, the output as its target) with what to compare."""
    if not settings.truth_table:
        raise ConfigError(
            "--test needs the table to compare with: --truth-table TABLE (ETL_TRUTH_TABLE)"
        )
    if settings.dry_run:
        raise ConfigError("--test writes a test table to compare; it cannot be a --dry-run")
    sample = sample_table_name(settings)
    truth = TableName.parse(settings.truth_table)
    output = output_table_name(settings)
    target = TableName.parse(settings.target_table)
    with connect(settings.database_url) as conn:
        if not table_exists(conn, sample):
            raise TableNotFound(
                f'sample table "{sample}" not found — make it with etl-sample --zips 20, or '
                "name another with --sample-table"
            )
        key = choose_key(conn, truth, settings.key_column)  # TableNotFound for the truth
        with conn.transaction():
            drop_scratch_table(
                conn, output, protected=[settings.raw_table, str(target), str(truth), str(sample)]
            )
            # Shaped like the real target when there is one, so the transform's output is
            # cast to the same types a real run would write.
            template = target if table_exists(conn, target) else sample
            create_target(conn, template, output, settings.partition_column)
            mark_scratch_table(conn, output, f"etl-enqueue --test output of {template}")
    test_settings = settings.replace(
        raw_table=str(sample), target_table=str(output), test_mode=True
    )
    return test_settings, Comparison(sample, output, truth, key)


def verify_test_run(settings: Settings, comparison: Comparison) -> TableDiff:
    """Compare the test run's output with the truth on the sampled zips."""
    with connect(settings.database_url) as conn:
        return compare_tables(
            conn,
            actual=comparison.output,
            expected=comparison.truth,
            key=comparison.key,
            partition_column=settings.partition_column,
            zips_from=comparison.sample,
        )
