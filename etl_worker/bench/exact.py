"""Whether a line's output is exact: identity against the raw table, row for row (EXCEPT
ALL both ways); any other transform by its row count and a few zips against the transform
applied in this process, one zip at a time, without downcasting (inprocess.py)."""

from __future__ import annotations

from psycopg import sql

from etl_worker.bench.data import PARTITION_COLUMN, RawTable
from etl_worker.bench.inprocess import IDENTITY, copy_partition, prepare
from etl_worker.bench.measure import Server, difference, drop_tables, fresh_target, tables_match
from etl_worker.config import Settings
from etl_worker.db import TableName, connect
from etl_worker.partition import PartitionKey

#: Zips a transform other than identity is checked on (the biggest, then spread by size).
REFERENCE_ZIPS = 8


def reference_zips(raw: RawTable, count: int) -> list[str]:
    """The biggest zip and then zips spread over the size range."""
    keys = sorted((k for k in raw.sizes if k), key=lambda k: -raw.sizes[k])
    step = max(1, len(keys) // max(1, count))
    return list(dict.fromkeys([keys[0], *keys[::step]]))[:count]


def reference_matches(
    server: Server,
    settings: Settings,
    raw: RawTable,
    target: TableName,
    transform: str,
    count: int,
) -> bool:
    """The transform applied in this process, one zip at a time and without downcasting,
    to a few zips, written to a scratch table: `target`'s rows for those zips must be the
    same multiset."""
    zips = reference_zips(raw, count)
    scratch = TableName("bench_reference")
    fresh_target(server.url, raw.table, scratch, PARTITION_COLUMN)
    ctx, run = prepare(settings.replace(database_url=server.url), raw.table, scratch, transform)
    try:
        for zip_code in zips:
            copy_partition(ctx, run, PartitionKey(zip_code))
    finally:
        ctx.close()
    chosen = sql.SQL("(SELECT * FROM {} WHERE {} = ANY({})) s").format(
        target.ident, sql.Identifier(PARTITION_COLUMN), sql.Literal(zips)
    )
    with connect(server.url) as conn:
        matched = difference(conn, chosen, scratch.ident) == (0, 0)
    drop_tables(server.url, scratch)
    return matched


def check_output(
    server: Server,
    settings: Settings,
    raw: RawTable,
    target: TableName,
    transform: str,
    rows_written: int,
    reference: int,
) -> tuple[bool, str]:
    """Whether a line's output is exact, and how that was checked: identity against the
    raw table (EXCEPT ALL both ways), another transform by the rows written and a few zips
    against the transform applied in-process."""
    if transform == IDENTITY:
        return tables_match(server.url, raw.table, target), "target EXCEPT ALL raw, both ways"
    exact = rows_written == raw.rows and reference_matches(
        server, settings, raw, target, transform, reference
    )
    return exact, f"{reference} zips against the transform applied in-process"
