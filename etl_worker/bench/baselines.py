"""The baselines etl-worker replaces, reproduced as their authors wrote them.

- seed-style: the blog's script. Per zip, a fresh SQLAlchemy engine, a string-formatted
  `pd.read_sql`, `to_csv(sep='\\t')` and psycopg2 `copy_from(null='')`, in a multiprocessing
  pool. Its output is checked like every other line: it is not expected to match (NULL
  integers become floats like `531210.0` that COPY rejects, tabs and newlines in text break
  rows, `''` turns into NULL). Its first rejected zip ends it, as an unhandled exception
  ended the blog's script: it is reported as a time to fail, not a throughput to beat.
- to_sql: per zip, `pd.read_sql` then `DataFrame.to_sql`, one engine per process, on every
  row (or on a share of the zips, extrapolated, where all would take hours).
"""

from __future__ import annotations

import importlib.util
import io
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
from psycopg import sql

from etl_worker.bench.data import PARTITION_COLUMN, RawTable
from etl_worker.bench.measure import (
    Line,
    Server,
    difference,
    drop_tables,
    fresh_target,
    process_pool,
    sampled,
)
from etl_worker.db import TableName, connect, first_line
from etl_worker.errors import EtlError

#: The blog's script ran on psycopg2; SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3.
_PSYCOPG2_SCHEME = "postgresql+psycopg2://"
#: What the baselines run on: the [bench] extra, not the worker's dependencies.
REQUIRED_MODULES = ("sqlalchemy", "psycopg2")


def check_installed() -> None:
    """Refuse to start a benchmark whose baselines would fail halfway for want of a package."""
    missing = [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise EtlError(
            f"etl-bench runs its baselines on {' and '.join(missing)}, which is not installed "
            "— install the bench extra: pip install 'etl-worker[bench]'"
        )


_engines: dict[str, Any] = {}


#: Server options that make Postgres plan as if the raw table had no index on zip_code,
#: as the blog's table had none: every zip is then a scan of the whole table.
NO_INDEX = "-c enable_indexscan=off -c enable_bitmapscan=off -c enable_indexonlyscan=off"


def _engine(url: str, options: str = "") -> Any:
    from sqlalchemy import create_engine

    connect_args = {"options": options} if options else {}
    return create_engine(_PSYCOPG2_SCHEME + url.split("://", 1)[1], connect_args=connect_args)


def _process_engine(url: str) -> Any:
    """One engine per pool process, made after the fork."""
    if url not in _engines:
        _engines[url] = _engine(url)
    return _engines[url]


def _seed_style_zip(
    url: str, raw: str, target: str, zip_code: str | None, options: str
) -> tuple[int, str | None]:
    """One zip the way the blog's script did it. Returns (rows read, COPY error or None)."""
    engine = _engine(url, options)  # a fresh engine per zip, as the script made one
    try:
        # The baseline's own string formatting, reproduced on purpose.
        query = f"SELECT * FROM {raw} WHERE {PARTITION_COLUMN} = '{zip_code}'"  # noqa: S608
        df = pd.read_sql(query, engine)
        buffer = io.StringIO()
        df.to_csv(buffer, sep="\t", header=False, index=False)
        buffer.seek(0)
        conn = engine.raw_connection()
        try:
            conn.cursor().copy_from(buffer, target, null="")
            conn.commit()
        except Exception as exc:
            conn.rollback()
            return len(df), first_line(exc)
        finally:
            conn.close()
        return len(df), None
    finally:
        engine.dispose()


def _to_sql_zip(
    url: str, raw: str, target: str, zip_code: str | None, options: str
) -> tuple[int, str | None]:
    from sqlalchemy import text

    engine = _process_engine(url)
    query = text(f"SELECT * FROM {raw} WHERE {PARTITION_COLUMN} = :zip")  # noqa: S608
    df = pd.read_sql(query, engine, params={"zip": zip_code})
    try:
        df.to_sql(target, engine, if_exists="append", index=False)
    except Exception as exc:
        return len(df), first_line(exc)
    return len(df), None


def subset(sizes: dict[str | None, int], share: float) -> list[str]:
    """Zips in key order (which has nothing to do with their size) until they hold `share`
    of the rows and of the zips, so the subset has a spread of sizes and extrapolating by
    rows or by zips gives about the same answer."""
    keys = sorted(k for k in sizes if k)
    total = sum(sizes[k] for k in keys)
    chosen: list[str] = []
    rows = 0
    for key in keys:
        if chosen and rows >= share * total and len(chosen) >= share * len(keys):
            break
        chosen.append(key)
        rows += sizes[key]
    return chosen


def _zip_task(args: tuple[Any, ...]) -> tuple[int, str | None]:
    work, *rest = args
    return work(*rest)


def _baseline(
    name: str,
    work: Callable[[str, str, str, str | None, str], tuple[int, str | None]],
    server: Server,
    raw: RawTable,
    procs: int,
    share: float,
    note: str,
    options: str = "",
    *,
    stop_at_first_error: bool = False,
) -> Line:
    """Run `work` per zip over `share` of the zips (all of them at 1.0). With
    `stop_at_first_error`, the script ends at its first rejected zip, as a script whose
    exception goes unhandled does: the line is then a time to fail, not a throughput."""
    url = server.url
    target = TableName(f"bench_{name.replace('-', '_').replace(' ', '_').replace(',', '').lower()}")
    fresh_target(url, raw.table, target, PARTITION_COLUMN)
    # Every zip the script would list, NULL too (`= NULL` finds none of its rows: lost,
    # and the check says so); or a share of the non-empty ones, extrapolated.
    everything = share >= 1
    zips: list[str | None] = (
        sorted(raw.sizes, key=lambda k: (k is None, k or "")) if everything
        else list(subset(raw.sizes, share))
    )  # fmt: skip
    results: list[tuple[int, str | None]] = []
    failed_after: float | None = None
    with process_pool(procs) as pool, sampled(server) as sampler:
        tasks = [(work, url, raw.table.name, target.name, z, options) for z in zips]
        for result in pool.imap_unordered(_zip_task, tasks, chunksize=1):
            results.append(result)
            if result[1] and failed_after is None:
                failed_after = time.perf_counter() - sampler.started
                if stop_at_first_error:
                    pool.terminate()
                    break
    usage = sampler.usage()
    measured_rows = raw.rows if everything else sum(raw.sizes[z] for z in zips)
    errors = [e for _, e in results if e]
    with connect(url) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target.ident)).fetchone()
        written = int(row[0]) if row else 0
    if failed_after is not None and stop_at_first_error:
        drop_tables(url, target)
        return Line(
            name,
            failed_after,
            raw.rows,
            False,
            f"{note}; fails: first zip rejected after {failed_after:.1f} s "
            f"({errors[0]}); {written:,} of {raw.rows:,} rows written by then",
            usage=usage,
            time_to_fail=True,
            extra={"rows_written": written, "failed_after_seconds": failed_after},
        )
    source = (
        raw.table.ident
        if everything
        else sql.SQL("(SELECT * FROM {} WHERE {} = ANY({})) s").format(
            raw.table.ident, sql.Identifier(PARTITION_COLUMN), sql.Literal(zips)
        )
    )
    with connect(url) as conn:
        missing, extra = difference(conn, source, target.ident)
    drop_tables(url, target)
    exact = not errors and (missing, extra) == (0, 0)
    verdict = (
        "output matched" if exact else f"output wrong: {missing:,} rows missing, {extra:,} extra"
    )
    if errors:
        verdict += f"; {len(errors)} of {len(zips)} zips rejected (e.g. {errors[0]})"
    extrapolated = measured_rows < raw.rows
    seconds = usage.wall_seconds * raw.rows / measured_rows if measured_rows else 0.0
    how = (
        f"measured on {len(zips):,} zips / {measured_rows:,} rows in {usage.wall_seconds:.1f} s, "
        "extrapolated"
        if extrapolated
        else f"all {len(zips):,} zips"
    )
    return Line(
        name,
        seconds,
        raw.rows,
        exact,
        f"{note}; {how}; {verdict}",
        extrapolated=extrapolated,
        usage=usage,
        extra={
            "subset_zips": len(zips),
            "measured_rows": measured_rows,
            "measured_seconds": usage.wall_seconds,
            "rejected_zips": len(errors),
            "rows_missing": missing,
            "rows_extra": extra,
        },
    )


def seed_style(server: Server, raw: RawTable, procs: int, *, index: bool) -> Line:
    """The blog's script; `index=False` plans as the blog's table did, with no index. It
    ends at its first rejected COPY, as the blog's script did: a time to fail."""
    return _baseline(
        "seed-style script" + ("" if index else ", no index"),
        _seed_style_zip,
        server,
        raw,
        procs,
        1.0,
        "per zip: fresh engine, string-formatted read_sql, to_csv + copy_from(null='')"
        + ("" if index else "; planner told to ignore the zip_code index, as the blog had none"),
        options="" if index else NO_INDEX,
        stop_at_first_error=True,
    )


def to_sql(server: Server, raw: RawTable, procs: int, share: float) -> Line:
    return _baseline(
        "pandas to_sql",
        _to_sql_zip,
        server,
        raw,
        procs,
        share,
        "per zip: read_sql + DataFrame.to_sql (SQLAlchemy 2, psycopg2)",
    )
