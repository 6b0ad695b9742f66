"""Seeding the raw table: recreate it, fill it with generated companies, index and analyze it.

All of it runs in one transaction on one ADBC connection, so readers see either the old table
or the complete new one, and a failed seed leaves the old table in place. The rows go in with
binary COPY (`adbc_ingest`); the primary key and the zip index are built after the load,
because building an index once is much faster than maintaining it row by row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import adbc_driver_manager
import psycopg
import pyarrow as pa
from psycopg import sql

from etl_worker.db import (
    TableName,
    adbc_connect,
    connect,
    database_label,
    database_name,
    ensure_database,
    first_line,
    table_comment,
    table_exists,
)
from etl_worker.devtools.fake_companies import RAW_SCHEMA, check_sizes, generate_companies
from etl_worker.errors import EtlError
from etl_worker.reporting.progress import row_progress

DEFAULT_ROWS = 200_000
DEFAULT_ZIPS = 1_000
DEFAULT_SEED = 42
#: Below this many rows a seed takes about a second: no progress bar needed.
PROGRESS_MIN_ROWS = 100_000

# The raw table. Other parts of the system read these names and types; keep them in step
# with fake_companies.RAW_SCHEMA. The primary key on id is added after the load.
_CREATE_TABLE = sql.SQL("""
CREATE TABLE {table} (
    id            bigint NOT NULL,
    zip_code      text,
    company_name  text,
    street        text,
    city          text,
    state         text,
    phone         text,
    website       text,
    naics_code    integer,
    employees     integer,
    revenue       numeric(14,2),
    founded_date  date,
    latitude      double precision,
    longitude     double precision,
    notes         text,
    updated_at    timestamptz
)
""")
_CREATE_SCHEMA = sql.SQL("CREATE SCHEMA IF NOT EXISTS {schema}")
_DROP_TABLE = sql.SQL("DROP TABLE IF EXISTS {table}")
_ADD_PRIMARY_KEY = sql.SQL("ALTER TABLE {table} ADD PRIMARY KEY (id)")
_INDEX_ZIP_CODE = sql.SQL("CREATE INDEX ON {table} (zip_code)")
_ANALYZE = sql.SQL("ANALYZE {table}")
_TABLE_BYTES = "SELECT pg_table_size(to_regclass(%s))"
_MARK_TABLE = sql.SQL("COMMENT ON TABLE {table} IS {mark}")
#: The comment on every table etl-seed makes. A table without it is someone's data: it is
#: never dropped without --replace, whatever its name (the demo seeds ETL_RAW_TABLE).
SEED_MARK = "made by etl-seed"


@dataclass(frozen=True)
class SeedResult:
    """What one seed produced."""

    table: str
    rows: int
    #: Distinct non-empty zip codes in the table.
    zips: int
    #: Size of the table's data (heap and TOAST, without indexes).
    bytes: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"seeded {self.table}: {self.rows:,} rows, {self.zips:,} zips, "
            f"{self.bytes / 1e6:,.1f} MB in {self.seconds:.1f} s "
            f"({self.rows_per_second:,.0f} rows/s)"
        )


def seed_raw_table(
    database_url: str,
    *,
    rows: int,
    zips: int,
    seed: int = DEFAULT_SEED,
    table: str = "raw_companies",
    progress: bool = False,
    replace: bool = False,
) -> SeedResult:
    """Replace `table` with `rows` generated companies spread over `zips` zip codes.

    Creates the database when missing. The contents depend only on (rows, zips, seed). An
    existing table etl-seed did not make is refused (EtlError) unless `replace`.
    """
    check_sizes(rows, zips)
    name = TableName.parse(table)
    started = time.perf_counter()
    try:
        ensure_database(database_url)
        if not replace:
            _refuse_foreign_table(database_url, name)
        with adbc_connect(database_url) as conn:
            _recreate_table(conn, name)
            with row_progress(rows, f"seeding {name}", show=progress) as advance:
                _load_rows(conn, name, _batches(rows, zips, seed, advance))
            _index_table(conn, name)
            mark = f"{SEED_MARK} (rows={rows}, zips={zips}, seed={seed})"
            _execute(conn, _MARK_TABLE, table=name.ident, mark=sql.Literal(mark))
            conn.commit()
        size = _table_bytes(database_url, name)
    except (psycopg.Error, adbc_driver_manager.Error) as exc:
        raise EtlError(
            f'cannot seed table "{name}" in database "{database_name(database_url)}": '
            f"{first_line(exc)}"
        ) from exc
    return SeedResult(
        table=str(name),
        rows=rows,
        zips=min(rows, zips),
        bytes=size,
        seconds=time.perf_counter() - started,
    )


def _refuse_foreign_table(database_url: str, name: TableName) -> None:
    with connect(database_url) as conn:
        if not table_exists(conn, name):
            return
        comment = table_comment(conn, name) or ""
        database = database_label(conn)
    if not comment.startswith(SEED_MARK):
        raise EtlError(
            f'table "{name}" in database "{database}" exists and was not made by etl-seed, so '
            "it is left alone — choose another --table (ETL_RAW_TABLE), or etl-seed --replace "
            "to drop it and its rows"
        )


def _execute(conn: Any, statement: sql.SQL, **identifiers: sql.Composable) -> None:
    with conn.cursor() as cur:
        cur.execute(statement.format(**identifiers).as_string())


def _recreate_table(conn: Any, name: TableName) -> None:
    if name.schema:
        _execute(conn, _CREATE_SCHEMA, schema=sql.Identifier(name.schema))
    _execute(conn, _DROP_TABLE, table=name.ident)
    _execute(conn, _CREATE_TABLE, table=name.ident)


def _batches(
    rows: int, zips: int, seed: int, advance: Callable[[int], None]
) -> Iterator[pa.RecordBatch]:
    for chunk in generate_companies(rows, zips, seed=seed):
        yield from chunk.to_batches()
        # Reached when COPY asks for the next chunk, so the bar counts rows already sent.
        advance(chunk.num_rows)


def _load_rows(conn: Any, name: TableName, batches: Iterator[pa.RecordBatch]) -> None:
    reader = pa.RecordBatchReader.from_batches(RAW_SCHEMA, batches)
    with conn.cursor() as cur:
        cur.adbc_ingest(name.name, reader, mode="append", db_schema_name=name.schema)


def _index_table(conn: Any, name: TableName) -> None:
    for statement in (_ADD_PRIMARY_KEY, _INDEX_ZIP_CODE, _ANALYZE):
        _execute(conn, statement, table=name.ident)


def _table_bytes(database_url: str, name: TableName) -> int:
    with connect(database_url) as conn:
        row = conn.execute(_TABLE_BYTES, (name.ident.as_string(conn),)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
