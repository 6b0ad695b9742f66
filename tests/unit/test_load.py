"""Casting a transform's output to the target's exact types, and the checks on the way."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pandas as pd
import pyarrow as pa
import pytest

from etl_worker.db import Column, TableName
from etl_worker.errors import PartitionDataError, SchemaMismatch
from etl_worker.frames import downcast, to_frame
from etl_worker.load import TargetSchema, check_partition_values, to_arrow


def column(name: str, type_sql: str) -> Column:
    return Column(name, type_sql, "pg_catalog", type_sql.split("(")[0], False)


TARGET = TargetSchema(
    TableName("clean_companies"),
    [
        column("zip_code", "text"),
        column("employees", "integer"),
        column("revenue", "numeric(14,2)"),
    ],
    pa.schema(
        [("zip_code", pa.string()), ("employees", pa.int32()), ("revenue", pa.decimal128(14, 2))]
    ),
)


def frame() -> pd.DataFrame:
    return to_frame(
        pa.table(
            {
                "zip_code": pa.array(["02134", "02134", "02134"] * 30),
                "employees": pa.array([1, None, 30000] * 30, pa.int64()),
                "revenue": pa.array(
                    [decimal.Decimal("12.34"), None, decimal.Decimal("-0.5")] * 30,
                    pa.decimal128(14, 2),
                ),
            }
        )
    )


def test_output_is_cast_to_the_target_types_in_the_target_order() -> None:
    df = frame()[["revenue", "zip_code", "employees"]]
    table = to_arrow(df, TARGET)
    assert table.schema == TARGET.arrow
    assert table.column("employees").to_pylist()[:3] == [1, None, 30000]


def test_downcast_output_is_written_back_with_the_same_values() -> None:
    table = to_arrow(downcast(frame()), TARGET)
    assert table.equals(to_arrow(frame(), TARGET))


def test_missing_and_extra_columns_are_named() -> None:
    df = frame().drop(columns=["revenue"]).assign(bonus=1)
    with pytest.raises(SchemaMismatch, match="missing revenue; extra bonus"):
        to_arrow(df, TARGET)


def test_a_value_that_does_not_fit_names_the_column() -> None:
    df = frame().assign(employees=pd.array([2**40] * 90, dtype="int64[pyarrow]"))
    with pytest.raises(PartitionDataError, match="column employees"):
        to_arrow(df, TARGET)


def test_rows_moved_to_another_partition_are_refused() -> None:
    table = to_arrow(frame(), TARGET)
    check_partition_values(table, "zip_code", pa.scalar("02134"), "'02134'")
    with pytest.raises(SchemaMismatch, match="changed the partition column zip_code in 90"):
        check_partition_values(table, "zip_code", pa.scalar("10016"), "'10016'")
    with pytest.raises(SchemaMismatch):
        check_partition_values(table, "zip_code", pa.scalar(None, pa.string()), "NULL")


UUID = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
STAMP = datetime.datetime(2024, 1, 1)


@pytest.mark.parametrize(
    ("read", "written", "other"),
    [
        # Bare numeric: read as the partition's own decimal, written as decimal(38, 9).
        (
            pa.scalar(decimal.Decimal("10.5"), pa.decimal128(3, 1)),
            pa.array([decimal.Decimal("10.500000000")] * 2, pa.decimal128(38, 9)),
            pa.array([decimal.Decimal("10.500000001")], pa.decimal128(38, 9)),
        ),
        # A timestamp is compared as one, never as '2024-01-01 00:00:00.000000'.
        (
            pa.scalar(STAMP, pa.timestamp("us")),
            pa.array([STAMP] * 2, pa.timestamp("us")),
            pa.array([STAMP + datetime.timedelta(microseconds=1)], pa.timestamp("us")),
        ),
        (
            pa.scalar(STAMP, pa.timestamp("us", tz="UTC")),
            pa.array([STAMP] * 2, pa.timestamp("us", tz="UTC")),
            pa.array([STAMP + datetime.timedelta(hours=5)], pa.timestamp("us")),
        ),
        (
            pa.scalar(UUID, pa.uuid()),
            pa.array([UUID] * 2, pa.uuid()),
            pa.array([uuid.UUID(int=0)], pa.uuid()),
        ),
        (pa.scalar(True), pa.array([True, True]), pa.array([False])),
        (
            pa.scalar(datetime.date(2024, 2, 29)),
            pa.array([datetime.date(2024, 2, 29)] * 2),
            pa.array([datetime.date(2024, 3, 1)]),
        ),
    ],
    ids=["numeric", "timestamp", "timestamptz", "uuid", "boolean", "date"],
)
def test_partition_values_are_compared_as_typed_values(
    read: pa.Scalar, written: pa.Array, other: pa.Array
) -> None:
    check_partition_values(pa.table({"part": written}), "part", read, "p")

    moved = pa.table({"part": pa.concat_arrays([written, other.cast(written.type)])})
    with pytest.raises(SchemaMismatch, match="changed the partition column part in 1 row"):
        check_partition_values(moved, "part", read, "p")
