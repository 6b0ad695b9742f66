"""The benchmark's tables: the generated raw table (built once, reused while its size and
seed match), and the one-row-per-zip tables behind the fixed-cost and enqueue lines."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from etl_worker.db import (
    TableName,
    connect,
    ensure_database,
    find_column,
    table_columns,
    table_comment,
    table_exists,
)
from etl_worker.devtools.seed import seed_raw_table
from etl_worker.ops.plan import nearest_rank
from etl_worker.splits import rows_per_partition

PARTITION_COLUMN = "zip_code"


@dataclass(frozen=True)
class RawTable:
    """A generated raw table and what the report says about it."""

    table: TableName
    rows: int
    bytes: int
    sizes: dict[str | None, int]

    @property
    def megabytes(self) -> float:
        return self.bytes / 1e6

    def size_summary(self) -> dict[str, float]:
        """Partition sizes: count, min, nearest-rank percentiles (as etl-plan gives), max."""
        counts = sorted(self.sizes.values())
        if not counts:
            return {}
        return {
            "partitions": len(counts),
            "min": counts[0],
            "median": nearest_rank(counts, 50),
            "mean": sum(counts) / len(counts),
            "p90": nearest_rank(counts, 90),
            "p99": nearest_rank(counts, 99),
            "max": counts[-1],
        }


def _marker(rows: int, zips: int, seed: int) -> str:
    return f"etl-bench rows={rows} zips={zips} seed={seed}"


def _ours(comment: str | None) -> bool:
    """A table the benchmark made (its marker replaced etl-seed's): reseeding may drop it."""
    return comment is not None and comment.startswith("etl-bench ")


def ensure_raw_table(
    database_url: str, table: str, *, rows: int, zips: int, seed: int, rebuild: bool = False
) -> RawTable:
    """The generated table of `rows` rows over `zips` zips, seeded again only when missing,
    of another size or seed, or when `rebuild` is set. A comment on the table records how it
    was made."""
    ensure_database(database_url)
    name = TableName.parse(table)
    marker = _marker(rows, zips, seed)
    with connect(database_url) as conn:
        current = table_comment(conn, name) if table_exists(conn, name) else None
    if rebuild or current != marker:
        seed_raw_table(
            database_url, rows=rows, zips=zips, seed=seed, table=table, replace=_ours(current)
        )
        with connect(database_url) as conn:
            conn.execute(
                sql.SQL("COMMENT ON TABLE {} IS {}").format(name.ident, sql.Literal(marker))
            )
    return describe_table(database_url, name)


def ensure_uniform_table(
    database_url: str, table: str, *, partitions: int, rows_per_partition: int, seed: int
) -> RawTable:
    """Generated rows, every partition the same size: `partitions` zips ('00000', ...) of
    `rows_per_partition` rows each (the generator's zips are Zipf-skewed, which would hide
    the per-partition cost behind a few big ones). Made once, like the raw table."""
    rows = partitions * rows_per_partition
    name = TableName.parse(table)
    marker = _marker(rows, partitions, seed) + " uniform"
    with connect(database_url) as conn:
        current = table_comment(conn, name) if table_exists(conn, name) else None
    if current != marker:
        seed_raw_table(
            database_url,
            rows=rows,
            zips=partitions,
            seed=seed,
            table=table,
            replace=_ours(current),
        )
        zip_code = sql.Identifier(PARTITION_COLUMN)
        with connect(database_url) as conn:
            conn.execute(
                sql.SQL("UPDATE {} SET {} = lpad(((id - 1) % {})::text, 5, '0')").format(
                    name.ident, zip_code, sql.Literal(partitions)
                )
            )
            conn.execute(sql.SQL("VACUUM FULL {}").format(name.ident))
            conn.execute(sql.SQL("ANALYZE {}").format(name.ident))
            conn.execute(
                sql.SQL("COMMENT ON TABLE {} IS {}").format(name.ident, sql.Literal(marker))
            )
    return describe_table(database_url, name)


def describe_table(database_url: str, name: TableName) -> RawTable:
    with connect(database_url) as conn:
        column = find_column(table_columns(conn, name), PARTITION_COLUMN, name)
        sizes = rows_per_partition(conn, name, column)
        row = conn.execute(
            "SELECT pg_table_size(to_regclass(%s))", (name.ident.as_string(conn),)
        ).fetchone()
    return RawTable(name, sum(sizes.values()), int(row[0]) if row else 0, sizes)
