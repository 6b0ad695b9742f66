"""Casting a transform's output to the target's exact types, and the checks on the way."""

from __future__ import annotations

import decimal

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
    check_partition_values(table, "zip_code", "02134", "'02134'")
    with pytest.raises(SchemaMismatch, match="changed the partition column zip_code in 90"):
        check_partition_values(table, "zip_code", "10016", "'10016'")
    with pytest.raises(SchemaMismatch):
        check_partition_values(table, "zip_code", None, "NULL")
