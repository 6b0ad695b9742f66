"""The baselines etl-worker replaces, reproduced as their authors wrote them, timed on a
subset of zips and extrapolated to the whole table (the report says so).

- seed-style: the blog's script. Per zip, a fresh SQLAlchemy engine, a string-formatted
  `pd.read_sql`, `to_csv(sep='\\t')` and psycopg2 `copy_from(null='')`, in a multiprocessing
  pool. Its output is checked like every other line: it is not expected to match (NULL
  integers become floats like `531210.0` that COPY rejects, tabs and newlines in text break
  rows, `''` turns into NULL).
- to_sql: per zip, `pd.read_sql` then `DataFrame.to_sql`, one engine per process.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Callable
from typing import Any

import pandas as pd
from psycopg import sql

from etl_worker.bench.data import PARTITION_COLUMN, RawTable
from etl_worker.bench.measure import Line, difference, fresh_target, process_pool, sampled
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
    url: str, raw: str, target: str, zip_code: str, options: str
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
    url: str, raw: str, target: str, zip_code: str, options: str
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


def _baseline(
    name: str,
    work: Callable[[str, str, str, str, str], tuple[int, str | None]],
    url: str,
    raw: RawTable,
    procs: int,
    share: float,
    note: str,
    options: str = "",
) -> Line:
    target = TableName(f"bench_{name.replace('-', '_').replace(' ', '_').lower()}")
    fresh_target(url, raw.table, target, PARTITION_COLUMN)
    zips = subset(raw.sizes, share)
    with process_pool(procs) as pool, sampled(url) as sampler:
        args = [(url, raw.table.name, target.name, z, options) for z in zips]
        results = pool.starmap(work, args)
    usage = sampler.usage()
    subset_rows = sum(raw.sizes[z] for z in zips)
    errors = [e for _, e in results if e]
    source = sql.SQL("(SELECT * FROM {} WHERE {} = ANY({})) s").format(
        raw.table.ident, sql.Identifier(PARTITION_COLUMN), sql.Literal(zips)
    )
    with connect(url) as conn:
        missing, extra = difference(conn, source, target.ident)
    exact = not errors and (missing, extra) == (0, 0)
    verdict = (
        "output matched" if exact else f"output wrong: {missing:,} rows missing, {extra:,} extra"
    )
    if errors:
        verdict += f"; {len(errors)} of {len(zips)} zips rejected (e.g. {errors[0]})"
    seconds = usage.wall_seconds * raw.rows / subset_rows if subset_rows else 0.0
    return Line(
        name,
        seconds,
        raw.rows,
        exact,
        f"{note}; measured on {len(zips):,} zips / {subset_rows:,} rows in "
        f"{usage.wall_seconds:.1f} s, extrapolated; {verdict}",
        extrapolated=True,
        usage=usage,
        extra={
            "subset_zips": len(zips),
            "subset_rows": subset_rows,
            "measured_rows": subset_rows,
            "measured_seconds": usage.wall_seconds,
            "rejected_zips": len(errors),
            "rows_missing": missing,
            "rows_extra": extra,
        },
    )


def seed_style(url: str, raw: RawTable, procs: int, share: float, *, index: bool) -> Line:
    """The blog's script; `index=False` plans as the blog's table did, with no index."""
    return _baseline(
        "seed-style script" + ("" if index else ", no index"),
        _seed_style_zip,
        url,
        raw,
        procs,
        share,
        "per zip: fresh engine, string-formatted read_sql, to_csv + copy_from(null='')"
        + ("" if index else "; planner told to ignore the zip_code index, as the blog had none"),
        options="" if index else NO_INDEX,
    )


def to_sql(url: str, raw: RawTable, procs: int, share: float) -> Line:
    return _baseline(
        "pandas to_sql",
        _to_sql_zip,
        url,
        raw,
        procs,
        share,
        "per zip: read_sql + DataFrame.to_sql (SQLAlchemy 2, psycopg2)",
    )
