"""The floors: what Postgres alone (SQL) and a bare binary COPY pipe (no pandas) achieve on
the same table, with the same number of processes. No pandas pipeline can beat the pipe."""

from __future__ import annotations

from collections.abc import Callable

from psycopg import sql

from etl_worker.bench.data import PARTITION_COLUMN, RawTable
from etl_worker.bench.measure import (
    Line,
    fresh_target,
    id_ranges,
    process_pool,
    sampled,
    tables_match,
)
from etl_worker.db import TableName, connect

_RANGE = sql.SQL("SELECT * FROM {} WHERE id >= {} AND id < {}")


def _insert_select(url: str, raw: TableName, target: TableName, lo: int, hi: int) -> None:
    with connect(url) as conn:
        select = _RANGE.format(raw.ident, sql.Literal(lo), sql.Literal(hi))
        conn.execute(sql.SQL("INSERT INTO {} {}").format(target.ident, select))


def _copy_pipe(url: str, raw: TableName, target: TableName, lo: int, hi: int) -> None:
    with connect(url) as source, connect(url) as sink:
        select = _RANGE.format(raw.ident, sql.Literal(lo), sql.Literal(hi))
        copy_out = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(select)
        copy_in = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(target.ident)
        with source.cursor().copy(copy_out) as out, sink.cursor().copy(copy_in) as into:
            for chunk in out:
                into.write(chunk)


#: name -> (what each process runs, how the report describes it)
FLOORS: dict[str, tuple[Callable[[str, TableName, TableName, int, int], None], str]] = {
    "SQL floor": (_insert_select, "inside Postgres: insert-select of {procs} id ranges at once"),
    "COPY pipe floor": (
        _copy_pipe,
        "binary COPY raw TO STDOUT -> COPY target FROM STDIN, {procs} streams, no pandas",
    ),
}


def floor(name: str, url: str, raw: RawTable, procs: int) -> Line:
    """The floor `name`: the raw table's id range cut into `procs` parts, one per process."""
    work, note = FLOORS[name]
    target = TableName(f"bench_{name.split()[0].lower()}_floor")
    fresh_target(url, raw.table, target, PARTITION_COLUMN)
    ranges = id_ranges(url, raw.table, procs)
    with process_pool(procs) as pool, sampled(url) as sampler:
        pool.starmap(work, [(url, raw.table, target, lo, hi) for lo, hi in ranges])
    usage = sampler.usage()
    exact = tables_match(url, raw.table, target)
    return Line(name, usage.wall_seconds, raw.rows, exact, note.format(procs=procs), usage=usage)
