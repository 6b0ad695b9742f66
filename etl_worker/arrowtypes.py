"""Postgres column types as Arrow types, where ADBC's own mapping needs help.

ADBC reads `numeric` as an opaque extension over strings, which pandas cannot compute with
and ADBC's COPY writer cannot write back. `numeric(p, s)` becomes `decimal128(p, s)` (or
`decimal256` past 38 digits), which is exact both ways. An unconstrained `numeric` gets the
smallest decimal that holds every value of the partition; NaN and infinities have no decimal
form and fail the partition with a clear message.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from etl_worker.db import Column
from etl_worker.errors import PartitionDataError

_NUMERIC = re.compile(r"^numeric(?:\((\d+)(?:,\s*(-?\d+))?\))?$")
_MAX_DECIMAL256 = 76


def is_numeric(column: Column) -> bool:
    return _NUMERIC.match(column.type_sql) is not None


def numeric_typmod(column: Column) -> tuple[int, int] | None:
    """(precision, scale) of a numeric(p,s) column; None for bare numeric or other types."""
    match = _NUMERIC.match(column.type_sql)
    if not match or match.group(1) is None:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def decimal_type(precision: int, scale: int) -> pa.DataType:
    if precision <= 38:
        return pa.decimal128(precision, scale)
    return pa.decimal256(min(precision, _MAX_DECIMAL256), scale)


def storage(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """An extension-typed column's storage (a uuid's fixed_size_binary(16)); others as they are."""
    if isinstance(values.type, pa.BaseExtensionType) or hasattr(values.type, "storage_type"):
        return pa.chunked_array([c.storage for c in values.chunks], type=values.type.storage_type)
    return values


def _inferred_decimal(column: Column, text: pa.ChunkedArray) -> pa.DataType:
    special = pc.is_in(pc.utf8_lower(text), value_set=pa.array(["nan", "infinity", "-infinity"]))
    if pc.any(special).as_py():
        raise PartitionDataError(
            f"column {column.name}: numeric NaN/Infinity has no exact decimal form "
            "— filter it out or give the column a numeric(p,s) type"
        )
    # Postgres prints numeric in plain notation: [-]digits[.digits]
    unsigned = pc.utf8_ltrim(text, characters="-")
    length = pc.utf8_length(unsigned)
    dot = pc.find_substring(unsigned, ".")
    no_dot = pc.equal(dot, -1)
    scale = pc.max(pc.if_else(no_dot, 0, pc.subtract(pc.subtract(length, dot), 1))).as_py() or 0
    digits = pc.max(pc.if_else(no_dot, length, dot)).as_py() or 1
    precision = digits + scale
    if precision > _MAX_DECIMAL256:
        raise PartitionDataError(
            f"column {column.name}: a numeric value has {precision} digits, more than the "
            f"{_MAX_DECIMAL256} an exact decimal holds"
        )
    return decimal_type(precision, scale)


def read_type(column: Column, values: pa.ChunkedArray) -> pa.DataType | None:
    """The Arrow type a column read by ADBC should be cast to, or None to keep ADBC's."""
    if not is_numeric(column):
        return None
    typmod = numeric_typmod(column)
    if typmod is None:
        return _inferred_decimal(column, storage(values))
    return decimal_type(*typmod)


def normalize_read(table: pa.Table, columns: list[Column]) -> pa.Table:
    """Cast the columns ADBC reads awkwardly (numeric) to exact Arrow types."""
    for i, column in enumerate(columns):
        values = table.column(i)
        target = read_type(column, values)
        if target is None:
            continue
        try:
            cast = storage(values).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise PartitionDataError(f"column {column.name}: {exc}") from exc
        table = table.set_column(i, pa.field(column.name, target), cast)
    return table
