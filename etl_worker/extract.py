"""Read exactly one partition of the raw table into Arrow.

The query runs through ADBC, which executes it as `COPY (SELECT ...) TO STDOUT (FORMAT
binary)` and decodes straight into Arrow buffers: no per-row Python objects, and every type
keeps its exact value (text with tabs or `\\N`, '' versus NULL, NULL integers, numeric).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
from psycopg import sql

from etl_worker.arrowtypes import normalize_read
from etl_worker.db import Column, TableName
from etl_worker.errors import MemoryCeilingExceeded
from etl_worker.partition import PartitionKey
from etl_worker.transactions import adbc_run


def predicate(
    key: PartitionKey, column: Column, split_column: str | None = None
) -> tuple[sql.Composable, dict[str, Any]]:
    """WHERE clause (and its parameters) selecting the partition's rows, index-friendly:
    `col = CAST(value AS coltype)` or `col IS NULL` — never `IS NOT DISTINCT FROM`, which
    Postgres cannot answer from an index."""
    col = sql.Identifier(column.name)
    params: dict[str, Any] = {}
    if key.value is None:
        clause: sql.Composable = sql.SQL("{} IS NULL").format(col)
    else:
        clause = sql.SQL("{} = CAST(%(part_key)s AS {})").format(col, column.type_ident)
        params["part_key"] = key.value
    if key.split_lo is not None or key.split_hi is not None:
        if split_column is None:
            raise ValueError("a split partition needs its split column")
        split = sql.Identifier(split_column)
        if key.split_lo is not None:
            clause = sql.SQL("{} AND {} >= %(split_lo)s").format(clause, split)
            params["split_lo"] = key.split_lo
        if key.split_hi is not None:
            clause = sql.SQL("{} AND {} < %(split_hi)s").format(clause, split)
            params["split_hi"] = key.split_hi
    return clause, params


def select_sql(table: TableName, where: sql.Composable) -> sql.Composed:
    return sql.SQL("SELECT * FROM {} WHERE {}").format(table.ident, where)


def typed_value(
    adbc_conn: Any,
    bind: Callable[[sql.Composed, dict[str, Any]], str],
    read: pa.Table,
    column: Column,
    key: PartitionKey,
) -> pa.Scalar:
    """The partition's value with the exact Arrow type its column is read as, for checking
    the transform's output (`load.check_partition_values`): null for the NULL partition;
    else taken from the rows just read (no round trip), or, when the partition has no rows,
    cast by Postgres and read the same way."""
    values = read.column(column.name)
    if key.value is None:
        return pa.scalar(None, values.type)
    if read.num_rows:
        return values[0]
    query = sql.SQL("SELECT CAST(%(part_key)s AS {}) AS {}").format(
        column.type_ident, sql.Identifier(column.name)
    )
    cast = read_arrow(adbc_conn, bind(query, {"part_key": key.value}), [column])
    return cast.column(0)[0]


#: The fence token of a partition's read (pipeline.py): the xmax of the snapshot it reads
#: in. Every transaction that committed before the snapshot has an id below it, and any
#: transaction given an id after the snapshot has one at or above it: a read that sees a
#: commit another read did not see has a greater xmax (the rows added between two runs'
#: reads make the later read's token strictly greater).
FENCE_TOKEN_SQL = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
_REPEATABLE_READ = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"


def fence_token(adbc_conn: Any, prelude: Sequence[str] = ()) -> int:
    """Start the read transaction and return its fence token: REPEATABLE READ, its
    snapshot taken by the token's own statement (or `prelude`'s, which open it in an
    exported snapshot: snapshot.py), so the `read_arrow` that follows (without a prelude)
    reads the snapshot the token comes from, and ends the transaction."""
    cur = adbc_conn.cursor()
    try:
        if prelude:
            adbc_conn.rollback()  # a fresh transaction: they must come before any query
            for statement in prelude:
                cur.execute(statement)
        else:
            # As a simple query (transactions.adbc_run): one round trip, not three.
            try:
                adbc_run(cur, _REPEATABLE_READ)
            except Exception:
                # A statement since the last commit took a snapshot (a catalog look-up of
                # the run's set-up): start a fresh transaction and set it there.
                adbc_conn.rollback()
                cur.close()
                cur = adbc_conn.cursor()
                adbc_run(cur, _REPEATABLE_READ)
        cur.execute(FENCE_TOKEN_SQL)
        row = cur.fetchone()
    except BaseException:
        adbc_conn.rollback()
        raise
    finally:
        cur.close()
    assert row is not None
    return int(row[0])


def read_arrow(
    adbc_conn: Any,
    query_text: str,
    columns: list[Column],
    *,
    ceiling_bytes: int = 0,
    label: str = "",
) -> pa.Table:
    """Run `query_text` (values already bound) and return its rows as one Arrow table, in
    the transaction `fence_token` opened (its snapshot, maybe an exported one), if any.

    Reads batch by batch so a partition over `ceiling_bytes` is refused before it is all in
    memory. Ends the read transaction, so no snapshot is held during the transform.
    """
    cur = adbc_conn.cursor()
    try:
        cur.execute(query_text)
        reader = cur.fetch_record_batch()
        batches: list[pa.RecordBatch] = []
        total = 0
        for batch in reader:
            total += batch.nbytes
            if ceiling_bytes and total > ceiling_bytes:
                raise MemoryCeilingExceeded(
                    f"partition {label} holds more than {ceiling_bytes:,} bytes "
                    f"(ETL_MEMORY_CEILING) after {sum(b.num_rows for b in batches):,} rows"
                )
            batches.append(batch)
        table = pa.Table.from_batches(batches, schema=reader.schema)
    finally:
        cur.close()
        adbc_conn.rollback()
    return normalize_read(table, columns)
