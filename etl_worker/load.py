"""Write one partition's transformed frame into the target table with binary COPY.

The frame is converted to Arrow, checked against the target's columns (a clear error names
what is missing or extra), each column is cast to the target column's exact Arrow type
(safe casts: an overflowing or malformed value fails the partition, naming the column), and
ADBC streams it with `COPY ... FROM STDIN (FORMAT binary)`. Never row-by-row INSERT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from etl_worker.arrowtypes import decimal_type, is_numeric, numeric_typmod, storage
from etl_worker.db import Column, TableName
from etl_worker.errors import PartitionDataError, SchemaMismatch


@dataclass(frozen=True)
class TargetSchema:
    table: TableName
    columns: list[Column]
    arrow: pa.Schema

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def target_schema(adbc_conn: Any, table: TableName, columns: list[Column]) -> TargetSchema:
    """The Arrow type each target column must be written as."""
    adbc_schema = adbc_conn.adbc_get_table_schema(table.name, db_schema_filter=table.schema)
    adbc_conn.rollback()
    fields = []
    for column in columns:
        typmod = numeric_typmod(column)
        if not is_numeric(column):
            kind = adbc_schema.field(column.name).type
        elif typmod is not None:
            kind = decimal_type(*typmod)
        else:
            # Bare numeric: decimal128(38, 9) holds what a frame can compute; the
            # partition's own values were read exactly (arrowtypes.read_type).
            kind = pa.decimal128(38, 9)
        fields.append(pa.field(column.name, kind))
    return TargetSchema(table, columns, pa.schema(fields))


def check_columns(names: list[str], target: TargetSchema) -> None:
    expected = target.names
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"extra {', '.join(extra)}")
        raise SchemaMismatch(
            f'the transform\'s output does not match target table "{target.table}": '
            f"{'; '.join(parts)} — make the transform return exactly the target's columns"
        )
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SchemaMismatch(f"the transform's output repeats columns {', '.join(duplicated)}")


def _cast_column(name: str, values: pa.ChunkedArray, kind: pa.DataType) -> pa.ChunkedArray:
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if values.type == kind:
        return values
    if isinstance(kind, pa.ExtensionType | pa.BaseExtensionType) and values.type == getattr(
        kind, "storage_type", None
    ):
        return pa.chunked_array([kind.wrap_array(c) for c in values.chunks], type=kind)
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), kind)
    try:
        return values.cast(kind, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise PartitionDataError(
            f"column {name}: cannot write {values.type} values as the target's {kind}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc


def to_arrow(df: pd.DataFrame, target: TargetSchema) -> pa.Table:
    """The frame as an Arrow table with exactly the target's columns, order and types."""
    names = [str(c) for c in df.columns]
    check_columns(names, target)
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise PartitionDataError(f"the transform's output cannot be written: {exc}") from exc
    arrays = [_cast_column(f.name, table.column(f.name), f.type) for f in target.arrow]
    return pa.Table.from_arrays(arrays, schema=target.arrow)


def check_partition_values(table: pa.Table, column: str, expected: pa.Scalar, label: str) -> None:
    """The transform must not move rows to another partition: a task replaces its own
    partition's rows only, so a changed key would leave rows no rerun could clean up.
    `expected` is the partition's value as read (extract.typed_value); values are compared
    as typed values, not as text (numeric 10.5 = 10.500000000, a timestamp is no string)."""
    if table.num_rows == 0:
        return
    values = table.column(column)
    if not expected.is_valid:
        moved = values.length() - values.null_count
    else:
        values, expected = _comparable(column, values, expected)
        kept = pc.sum(pc.fill_null(pc.equal(values, expected), False)).as_py() or 0
        moved = table.num_rows - int(kept)
    if moved:
        raise SchemaMismatch(
            f"the transform changed the partition column {column} in {moved} row(s) of "
            f"partition {label}; a transform must keep each row's partition value"
        )


def _comparable(
    column: str, values: pa.ChunkedArray, expected: pa.Scalar
) -> tuple[pa.ChunkedArray, pa.Scalar]:
    """Both sides in one Arrow type: the values cast to the partition value's exact type
    (10.500000000 to the decimal(3,1) of 10.5), or, when some value does not fit that type
    (so it cannot equal the partition value), the partition value cast to the values'."""
    values = storage(values)
    if isinstance(expected, pa.ExtensionScalar):
        expected = expected.value  # a uuid as its 16 bytes, like the values' storage
    if values.type == expected.type:
        return values, expected
    errors = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)
    try:
        return values.cast(expected.type, safe=True), expected
    except errors:
        pass
    try:
        return values, expected.cast(values.type, safe=True)
    except errors as exc:
        raise SchemaMismatch(
            f"the partition column {column} is written as {values.type} but read as "
            f"{expected.type}, and its values cannot be compared: {str(exc).splitlines()[0]}"
        ) from exc


def check_split_values(
    table: pa.Table, column: str | None, lo: int | None, hi: int | None, label: str
) -> None:
    """A task of a split partition replaces only its range of the split column: the
    transform must keep every row's split value inside [lo, hi) for the same reason."""
    if column is None or table.num_rows == 0 or (lo is None and hi is None):
        return
    values = table.column(column)
    keep = pc.is_valid(values)
    if lo is not None:
        keep = pc.and_(keep, pc.greater_equal(values, lo))
    if hi is not None:
        keep = pc.and_(keep, pc.less(values, hi))
    moved = table.num_rows - int(pc.sum(pc.fill_null(keep, False)).as_py() or 0)
    if moved:
        raise SchemaMismatch(
            f"the transform moved {moved} row(s) of partition {label} out of its range of "
            f"the split column {column}; a transform must keep each row's {column}"
        )


def ingest(adbc_cursor: Any, table: TableName, data: pa.Table) -> int:
    """COPY `data` into `table` on the cursor's open transaction. Returns rows written."""
    if data.num_rows == 0:
        return 0
    return int(
        adbc_cursor.adbc_ingest(table.name, data, mode="append", db_schema_name=table.schema)
    )


def warm_up() -> None:
    """Run a small synthetic frame through the frame path (Arrow -> pandas, cast for the
    write), so what pandas and pyarrow load lazily on first use (categoricals, compute
    kernels) is loaded when the pool process starts. The first partition then costs what
    the others cost, and a pool process's baseline memory includes its libraries."""
    from decimal import Decimal

    from etl_worker.frames import frame_memory, to_frame

    n = 128
    table = pa.table(
        {
            "i": pa.array(range(n), pa.int64()),
            "f": pa.array([0.5] * n, pa.float64()),
            "s": pa.array(["a", "b"] * (n // 2)),
            "d": pa.array([Decimal("1.25")] * n, pa.decimal128(14, 2)),
        }
    )
    columns = [Column(name, "", "", "", False) for name in table.column_names]
    frame = to_frame(table)
    frame_memory(frame)
    # One column cast to a narrower type: loads the cast kernels the write uses.
    target = table.schema.set(0, pa.field("i", pa.int32()))
    to_arrow(frame, TargetSchema(TableName("warm_up"), columns, target))
