"""Skew: splitting partitions too big for one task into sub-tasks by ranges of a second key.

Real zip codes are skewed (a downtown zip can hold a thousand times the rows of a rural
one): one huge partition would keep one process busy long after the rest of the run is done,
and need memory for all of it at once. At enqueue time, a partition with more rows than
`ETL_SPLIT_ROWS` becomes several tasks, each taking a half-open range [lo, hi) of the split
column (by default the raw table's integer primary key), cut at quantiles so the pieces hold
about the same number of rows.

The ranges tile the whole key space: the first is open below, the last open above. So the
sub-tasks' DELETEs together remove exactly what the whole partition's DELETE would, and each
sub-task is idempotent on its own (it deletes and rewrites only its own range).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from etl_worker.db import Column, TableName, find_column
from etl_worker.errors import ConfigError
from etl_worker.extract import predicate
from etl_worker.partition import PartitionKey, key_text

#: Postgres integer types a split column may have (ranges are bigint in the audit table).
INTEGER_TYPES = frozenset({"int2", "int4", "int8"})


@dataclass(frozen=True)
class Split:
    """A partition and the range of the split column one task takes ([None, None] = all)."""

    key: str | None
    lo: int | None = None
    hi: int | None = None
    #: Rows the task is expected to read (its partition's count, or its share of it).
    rows: int = 0


def primary_key_column(conn: psycopg.Connection, table: TableName) -> str | None:
    """The name of the table's primary key when it is one integer column, else None."""
    row = conn.execute(
        """
        SELECT a.attname, t.typname FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        JOIN pg_type t ON t.oid = a.atttypid
        WHERE i.indrelid = to_regclass(%s) AND i.indisprimary AND i.indnatts = 1
        """,
        (table.ident.as_string(conn),),
    ).fetchone()
    if row is None or row[1] not in INTEGER_TYPES:
        return None
    return str(row[0])


def split_column(
    conn: psycopg.Connection, raw: TableName, columns: list[Column], configured: str
) -> Column | None:
    """The column big partitions are split by: `configured` (ETL_SPLIT_COLUMN, checked to be
    a NOT NULL integer, since a NULL would fall in no range), else the raw table's integer
    primary key, else None (no splitting possible)."""
    name = configured or primary_key_column(conn, raw)
    if not name:
        return None
    column = find_column(columns, name, raw)
    if column.type_name not in INTEGER_TYPES or not column.not_null:
        raise ConfigError(
            f'split column "{name}" of table "{raw}" is {column.type_sql}'
            f"{'' if column.not_null else ' and nullable'}: it must be a NOT NULL integer "
            "column — check ETL_SPLIT_COLUMN (or set ETL_SPLIT_ROWS=0 to never split)"
        )
    return column


def rows_per_partition(
    conn: psycopg.Connection,
    raw: TableName,
    column: Column,
    keys: Sequence[str | None] | None = None,
) -> dict[str | None, int]:
    """Rows per partition, keyed by its text (`partition.key_text`; NULL included): of every
    value in one GROUP BY when `keys` is None, else of just those keys (absent ones count 0)."""
    col = sql.Identifier(column.name)
    text = key_text(column, col)
    if keys is None:
        query = sql.SQL("SELECT {text}, count(*) FROM {table} GROUP BY 1 ORDER BY 1 NULLS LAST")
        rows = conn.execute(query.format(text=text, table=raw.ident)).fetchall()
        return {key: int(n) for key, n in rows}
    values = [k for k in keys if k is not None]
    by_key = sql.SQL(
        "SELECT {text}, count(*) FROM {table} "
        "WHERE {col} = ANY(CAST(%(values)s AS {kind}[])) OR (%(null)s AND {col} IS NULL) "
        "GROUP BY 1"
    ).format(text=text, col=col, table=raw.ident, kind=column.type_ident)
    found: dict[str | None, int] = dict(
        conn.execute(by_key, {"values": values, "null": None in keys}).fetchall()
    )
    return {key: int(found.get(key, 0)) for key in keys}


def split_ranges(
    conn: psycopg.Connection,
    raw: TableName,
    column: Column,
    split: Column,
    key: str | None,
    pieces: int,
) -> list[tuple[int | None, int | None]]:
    """`pieces` ranges of `split` holding about equal shares of partition `key`'s rows; fewer
    when the column has too few distinct values there."""
    where, params = predicate(PartitionKey(key), column)
    cuts = [i / pieces for i in range(1, pieces)]
    query = sql.SQL(
        "SELECT percentile_disc(%(cuts)s::float8[]) WITHIN GROUP (ORDER BY {split}) "
        "FROM {table} WHERE {where}"
    ).format(split=sql.Identifier(split.name), table=raw.ident, where=where)
    row = conn.execute(query, {**params, "cuts": cuts}).fetchone()
    bounds = sorted({int(b) for b in (row[0] if row and row[0] else []) if b is not None})
    edges: list[int | None] = [None, *bounds, None]
    return list(itertools.pairwise(edges))


def plan_splits(
    conn: psycopg.Connection,
    raw: TableName,
    column: Column,
    split: Column | None,
    sizes: dict[str | None, int],
    split_rows: int,
) -> list[Split]:
    """One `Split` per task: whole partitions, and oversized ones cut into ranges; biggest
    first. Workers take tasks in queue order, so sending the longest first keeps the end of
    a skewed run from waiting on one big partition that happened to be queued last
    (longest-processing-time-first scheduling)."""
    plan: list[Split] = []
    for key, rows in sizes.items():
        if split is None or split_rows <= 0 or rows <= split_rows:
            plan.append(Split(key, rows=rows))
            continue
        pieces = math.ceil(rows / split_rows)
        ranges = split_ranges(conn, raw, column, split, key, pieces)
        plan.extend(Split(key, lo, hi, rows // len(ranges)) for lo, hi in ranges)
    plan.sort(key=lambda part: -part.rows)  # stable: equal sizes keep the key order
    return plan
