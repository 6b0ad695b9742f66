"""numeric columns become exact decimals; what cannot be exact is refused clearly."""

from __future__ import annotations

import decimal

import pyarrow as pa
import pytest

from etl_worker.arrowtypes import normalize_read, numeric_typmod
from etl_worker.db import Column
from etl_worker.errors import PartitionDataError


def numeric(type_sql: str) -> Column:
    return Column("n", type_sql, "pg_catalog", "numeric", False)


def test_typmods_are_parsed() -> None:
    assert numeric_typmod(numeric("numeric(14,2)")) == (14, 2)
    assert numeric_typmod(numeric("numeric(10)")) == (10, 0)
    assert numeric_typmod(numeric("numeric")) is None
    assert numeric_typmod(Column("t", "text", "pg_catalog", "text", False)) is None


def test_numeric_with_a_typmod_reads_as_that_decimal() -> None:
    table = pa.table({"n": pa.array(["12.34", None, "-0.50"])})
    out = normalize_read(table, [numeric("numeric(14,2)")])
    assert out.schema.field("n").type == pa.decimal128(14, 2)
    assert out.column("n").to_pylist() == [decimal.Decimal("12.34"), None, decimal.Decimal("-0.50")]


def test_bare_numeric_gets_the_smallest_decimal_holding_every_value() -> None:
    values = ["123456789012345678901234567890.123456789", "0.5", None, "-7"]
    out = normalize_read(pa.table({"n": pa.array(values)}), [numeric("numeric")])
    assert out.schema.field("n").type == pa.decimal256(39, 9)
    assert str(out.column("n")[0].as_py()) == values[0]


def test_numeric_nan_is_refused_with_the_column_named() -> None:
    with pytest.raises(PartitionDataError, match="column n: numeric NaN"):
        normalize_read(pa.table({"n": pa.array(["1", "NaN"])}), [numeric("numeric")])
