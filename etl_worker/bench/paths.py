"""Read and write paths compared, one process, on the same zips: which way of getting a
partition from Postgres into pandas (and back) is fastest while exact on every type the
raw table holds. The pipeline uses the winner (ADBC both ways); this keeps the evidence.

Each read path's frames are written back with the ADBC writer, each write path gets the
ADBC reader's frames, and the result is compared with the raw rows (EXCEPT ALL): a path is
exact only when nothing was lost, changed or added on the way.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from etl_worker.bench.data import PARTITION_COLUMN, RawTable
from etl_worker.bench.exact import reference_zips
from etl_worker.bench.measure import difference, drop_tables, fresh_target
from etl_worker.db import (
    Column,
    TableName,
    adbc_connect,
    connect,
    find_column,
    first_line,
    table_columns,
)
from etl_worker.extract import predicate, read_arrow, select_sql
from etl_worker.frames import to_frame
from etl_worker.load import TargetSchema, ingest, target_schema, to_arrow
from etl_worker.partition import PartitionKey


@dataclass(frozen=True)
class PathResult:
    direction: str  # read | write
    name: str
    seconds: float
    rows: int
    exact: bool
    note: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class _Setup:
    url: str
    raw: TableName
    columns: list[Column]
    schema: TargetSchema
    queries: list[str]  # one bound SELECT per zip
    adbc: Any


Reader = Callable[[_Setup, str], pd.DataFrame]
Writer = Callable[[_Setup, TableName, pd.DataFrame], None]


def _read_adbc(setup: _Setup, query: str) -> pd.DataFrame:
    return to_frame(read_arrow(setup.adbc, query, setup.columns))


def _read_connectorx(setup: _Setup, query: str) -> pd.DataFrame:
    import connectorx as cx

    return to_frame(cx.read_sql(setup.url, query, return_type="arrow"))


def _read_psycopg_binary(setup: _Setup, query: str) -> pd.DataFrame:
    with connect(setup.url) as conn, conn.cursor() as cur:
        statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(sql.SQL(query))
        with cur.copy(statement) as copy:
            copy.set_types([c.type_sql.split("(")[0] for c in setup.columns])
            rows = list(copy.rows())
    return pd.DataFrame.from_records(rows, columns=[c.name for c in setup.columns])


def _read_psycopg_csv(setup: _Setup, query: str) -> pd.DataFrame:
    buffer = io.BytesIO()
    with connect(setup.url) as conn, conn.cursor() as cur:
        statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(sql.SQL(query))
        with cur.copy(statement) as copy:
            for chunk in copy:
                buffer.write(chunk)
    buffer.seek(0)
    text = {c.name: "string" for c in setup.columns if c.type_name == "text"}
    return pd.read_csv(buffer, dtype=text, engine="c")


def _read_sql(setup: _Setup, query: str) -> pd.DataFrame:
    from sqlalchemy import create_engine

    engine = create_engine(setup.url)  # SQLAlchemy 2.1: postgresql:// is psycopg 3
    try:
        return pd.read_sql(query, engine)
    finally:
        engine.dispose()


READERS: dict[str, Reader] = {
    "ADBC (binary COPY -> Arrow)": _read_adbc,
    "connectorx (-> Arrow)": _read_connectorx,
    "psycopg 3 binary COPY (rows)": _read_psycopg_binary,
    "psycopg 3 CSV COPY + read_csv (C)": _read_psycopg_csv,
    "pd.read_sql (SQLAlchemy, psycopg 3)": _read_sql,
}


def _write_adbc(setup: _Setup, target: TableName, frame: pd.DataFrame) -> None:
    cur = setup.adbc.cursor()
    try:
        ingest(cur, target, to_arrow(frame, setup.schema))
        setup.adbc.commit()
    finally:
        cur.close()


def _write_psycopg_binary(setup: _Setup, target: TableName, frame: pd.DataFrame) -> None:
    data = to_arrow(frame, setup.schema)
    with connect(setup.url) as conn, conn.cursor() as cur:
        statement = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(target.ident)
        with cur.copy(statement) as copy:
            copy.set_types([c.type_sql.split("(")[0] for c in setup.columns])
            values = [data.column(i).to_pylist() for i in range(data.num_columns)]
            for row in zip(*values, strict=True):
                copy.write_row(row)


def _write_psycopg_csv(setup: _Setup, target: TableName, frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False)
    with connect(setup.url) as conn, conn.cursor() as cur:
        statement = sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(target.ident)
        with cur.copy(statement) as copy:
            copy.write(buffer.getvalue())


WRITERS: dict[str, Writer] = {
    "ADBC adbc_ingest (binary COPY)": _write_adbc,
    "psycopg 3 binary COPY (write_row)": _write_psycopg_binary,
    "psycopg 3 CSV COPY (to_csv)": _write_psycopg_csv,
}


def _exact(setup: _Setup, target: TableName, zips: list[str]) -> bool:
    chosen = sql.SQL("(SELECT * FROM {} WHERE {} = ANY({})) s").format(
        setup.raw.ident, sql.Identifier(PARTITION_COLUMN), sql.Literal(zips)
    )
    with connect(setup.url) as conn:
        return difference(conn, chosen, target.ident) == (0, 0)


def compare_paths(url: str, raw: RawTable, zips: int = 12) -> list[PathResult]:
    """Each read path and each write path over the same `zips` partitions."""
    chosen = reference_zips(raw, zips)
    rows = sum(raw.sizes[z] for z in chosen)
    scratch = TableName("bench_paths")
    adbc = adbc_connect(url)
    results: list[PathResult] = []
    try:
        with connect(url) as conn:
            columns = table_columns(conn, raw.table)
        column = find_column(columns, PARTITION_COLUMN, raw.table)
        with connect(url) as conn:
            queries = []
            for z in chosen:
                where, params = predicate(PartitionKey(z), column)
                bound = psycopg.ClientCursor(conn).mogrify(select_sql(raw.table, where), params)
                queries.append(bound)
        schema = target_schema(adbc, raw.table, columns)
        setup = _Setup(url, raw.table, columns, schema, queries, adbc)
        frames = [_read_adbc(setup, q) for q in queries]
        for name, reader in READERS.items():
            fresh_target(url, raw.table, scratch, PARTITION_COLUMN)
            started = time.perf_counter()
            try:
                read = [reader(setup, q) for q in queries]
            except ImportError as exc:  # connectorx and SQLAlchemy: the [bench] extra
                results.append(PathResult("read", name, 0.0, rows, False, f"not installed: {exc}"))
                continue
            except Exception as exc:
                results.append(PathResult("read", name, 0.0, rows, False, first_line(exc)))
                continue
            seconds = time.perf_counter() - started
            note = ""
            try:
                for frame in read:
                    _write_adbc(setup, scratch, frame)
                exact = _exact(setup, scratch, chosen)
            except Exception as exc:
                exact, note = False, f"cannot be written back exactly: {first_line(exc)}"
            results.append(PathResult("read", name, seconds, rows, exact, note))
        for name, writer in WRITERS.items():
            fresh_target(url, raw.table, scratch, PARTITION_COLUMN)
            started = time.perf_counter()
            note = ""
            try:
                for frame in frames:
                    writer(setup, scratch, frame)
            except Exception as exc:
                note = first_line(exc)
            seconds = time.perf_counter() - started
            exact = not note and _exact(setup, scratch, chosen)
            results.append(PathResult("write", name, seconds, rows, exact, note))
    finally:
        adbc.close()
        drop_tables(url, scratch)
    return results
