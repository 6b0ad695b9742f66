"""Removing target rows whose partition value is gone from the raw table (opt-in:
`etl-enqueue --all-zips --delete-vanished`).

A run rewrites the partitions it lists; a zip that vanished from the raw table is listed by
no run, so its rows stay in the target. This deletes them, in one transaction that holds the
write path's lock on every vanished (target, value) first — so it never interleaves with a
partition's write of the same value — then deletes with one statement per kind of value
(typed values; the NULL partition), each re-checking under the locks that the raw table still
has no row of that value (a value that came back meanwhile is kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from etl_worker.db import Column, TableName, resolve_schema
from etl_worker.partition import key_text


@dataclass(frozen=True)
class Vanished:
    """What --delete-vanished removed: partition values and target rows."""

    values: list[str | None]
    rows: int


def write_lock_key(target: TableName, value: str | None) -> str:
    """The advisory lock key the write path takes for a whole partition of `target`
    (pipeline._process: target, tagged value, split_lo). Keep the two in step: a change of
    the write path's key (e.g. to the target's oid and the value) changes it here too."""
    tagged = "n" if value is None else "v" + value
    return f"{target}\x1f{tagged}\x1f{None}"


def delete_vanished(
    conn: psycopg.Connection, raw: TableName, target: TableName, column: Column
) -> Vanished:
    """Delete the target rows whose partition value no longer exists in the raw table
    (`conn` in autocommit; one transaction here). Returns what was removed."""
    col = sql.Identifier(column.name)
    target = resolve_schema(conn, target)  # as the write path names it in its lock key
    # EXCEPT compares NULLs as equal: the NULL partition vanishes like any other value.
    find = sql.SQL("SELECT {t_text} FROM {target} EXCEPT SELECT {r_text} FROM {raw}").format(
        t_text=key_text(column, col),
        r_text=key_text(column, col),
        target=target.ident,
        raw=raw.ident,
    )
    with conn.transaction():
        values: list[str | None] = [r[0] for r in conn.execute(find)]
        if not values:
            return Vanished([], 0)
        keys = sorted(write_lock_key(target, v) for v in values)
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(%s::text[]) AS k",
            (keys,),
        )
        rows = 0
        typed = [v for v in values if v is not None]
        if typed:
            delete = sql.SQL(
                "DELETE FROM {target} t WHERE t.{col} = ANY(CAST(%(values)s::text[] AS {type}[])) "
                "AND NOT EXISTS (SELECT 1 FROM {raw} r WHERE r.{col} = t.{col})"
            ).format(target=target.ident, raw=raw.ident, col=col, type=column.type_ident)
            rows += conn.execute(delete, {"values": typed}).rowcount
        if None in values:
            delete_null = sql.SQL(
                "DELETE FROM {target} WHERE {col} IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM {raw} WHERE {col} IS NULL)"
            ).format(target=target.ident, raw=raw.ident, col=col)
            rows += conn.execute(delete_null).rowcount
    return Vanished(values, rows)
