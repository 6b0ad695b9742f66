"""The floors: what Postgres alone (SQL) and a bare binary COPY pipe (no pandas) achieve on
the same table, with the same number of processes. No pandas pipeline can beat the pipe.

The pipe is the fastest one we could build: two `psql` processes per stream, binary `COPY
... TO STDOUT` piped into `COPY ... FROM STDIN`, bytes passed by the kernel, no Python in
between (a psycopg relay, which decodes every row's CopyData message in Python, was 15-22%
slower and flattered every ratio against it).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

from psycopg import sql

from etl_worker.bench.data import PARTITION_COLUMN, RawTable
from etl_worker.bench.measure import (
    Line,
    Server,
    drop_tables,
    fresh_target,
    id_ranges,
    process_pool,
    sampled,
    tables_match,
)
from etl_worker.db import TableName, connect
from etl_worker.errors import EtlError

_RANGE = sql.SQL("SELECT * FROM {} WHERE id >= {} AND id < {}")


def _insert_select(url: str, raw: TableName, target: TableName, lo: int, hi: int) -> None:
    with connect(url) as conn:
        select = _RANGE.format(raw.ident, sql.Literal(lo), sql.Literal(hi))
        conn.execute(sql.SQL("INSERT INTO {} {}").format(target.ident, select))


def _psql(url: str, command: str, **streams: object) -> subprocess.Popen[bytes]:
    psql = shutil.which("psql")
    if psql is None:
        raise EtlError("etl-bench needs psql for the COPY pipe floor — install postgresql-client")
    return subprocess.Popen(
        [psql, "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", command],
        stderr=subprocess.PIPE,
        **streams,  # type: ignore[call-overload]
    )


def _copy_pipe(url: str, raw: TableName, target: TableName, lo: int, hi: int) -> None:
    """One stream: psql COPY out | psql COPY in. Raises with psql's error if either fails."""
    with connect(url) as conn:
        select = _RANGE.format(raw.ident, sql.Literal(lo), sql.Literal(hi))
        copy_out = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(select).as_string(conn)
        copy_in = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(target.ident)
        copy_in_text = copy_in.as_string(conn)
    source = _psql(url, copy_out, stdout=subprocess.PIPE)
    sink = _psql(url, copy_in_text, stdin=source.stdout)
    assert source.stdout is not None
    source.stdout.close()  # the sink holds the pipe now: it sees EOF when the source ends
    errors = [p.communicate()[1] for p in (sink, source)]
    if source.returncode or sink.returncode:
        detail = b" ".join(e.strip() for e in errors if e).decode(errors="replace")
        raise EtlError(f"the COPY pipe floor failed: {detail}")


#: name -> (what each process runs, how the report describes it)
FLOORS: dict[str, tuple[Callable[[str, TableName, TableName, int, int], None], str]] = {
    "SQL floor": (_insert_select, "inside Postgres: insert-select of {procs} id ranges at once"),
    "COPY pipe floor": (
        _copy_pipe,
        "psql binary COPY raw TO STDOUT | psql COPY target FROM STDIN, {procs} streams",
    ),
}


def floor(name: str, server: Server, raw: RawTable, procs: int) -> Line:
    """The floor `name`: the raw table's id range cut into `procs` parts, one per process."""
    work, note = FLOORS[name]
    url = server.url
    target = TableName(f"bench_{name.split()[0].lower()}_floor")
    fresh_target(url, raw.table, target, PARTITION_COLUMN)
    ranges = id_ranges(url, raw.table, procs)
    with process_pool(procs) as pool, sampled(server) as sampler:
        pool.starmap(work, [(url, raw.table, target, lo, hi) for lo, hi in ranges])
    usage = sampler.usage()
    exact = tables_match(url, raw.table, target)
    drop_tables(url, target)
    return Line(name, usage.wall_seconds, raw.rows, exact, note.format(procs=procs), usage=usage)
