"""What a partition's read costs Postgres, by how the raw table's rows lie on disk.

A partition is read with `WHERE zip = value` through the zip index: a bitmap heap scan that
visits every page holding one of the zip's rows. When rows arrive in no zip order (the
generated tables, most real loads), a page holds rows of many zips and is visited once per
zip: the whole run reads the table many times over, from shared buffers at best. The same
rows in zip order (`CLUSTER raw USING its zip index`, or loading them sorted) put each zip
on as few pages as its rows fill.

    python -m etl_worker.bench.readplan --rows 80 --partitions 4000
    python -m etl_worker.bench.readplan --table bench_raw_companies

For the table as it is and a copy in zip order, over `--sample` partitions: heap pages
visited per partition and over the whole run (against the table's own pages), the share of
the read's buffers found in shared_buffers (the rest Postgres copies in from the kernel's
cache or the disk: CPU that grows as the table outgrows shared_buffers), and the read's
execution time from EXPLAIN ANALYZE (indicative on a shared machine; the pages are a
count). `--as-loaded-only` skips the copy, for a table too big to copy (the scaling
series' 50M-row table is 11 GB):

    python -m etl_worker.bench.readplan --table bench_scale_50000000 --as-loaded-only
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from psycopg import sql

from etl_worker.bench.data import PARTITION_COLUMN, describe_table, ensure_uniform_table
from etl_worker.bench.runner import BenchOptions, bench_server, cleanup
from etl_worker.config import Settings
from etl_worker.db import TableName, connect

SORTED_SUFFIX = "_zip_ordered"


def _pages(conn: Any, table: TableName) -> int:
    row = conn.execute(
        "SELECT relpages FROM pg_class WHERE oid = to_regclass(%s)",
        (str(table.ident.as_string(conn)),),
    ).fetchone()
    return int(row[0]) if row else 0


def _explain(conn: Any, table: TableName, key: str) -> tuple[int, float, float]:
    """(heap pages the read visited, execution ms, share of its buffers that were in
    shared_buffers) of one partition's read."""
    query = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM {} WHERE {} = %s")
    row = conn.execute(
        query.format(table.ident, sql.Identifier(PARTITION_COLUMN)), (key,)
    ).fetchone()
    plan = (row[0] if isinstance(row[0], list) else json.loads(row[0]))[0]
    top = plan["Plan"]  # its buffer counts include its children's
    hit, read = int(top.get("Shared Hit Blocks", 0)), int(top.get("Shared Read Blocks", 0))
    return _heap_pages(top), float(plan["Execution Time"]), hit / max(1, hit + read)


def _heap_pages(node: dict[str, Any]) -> int:
    """Heap blocks of the plan's table scans (a bitmap heap scan's exact + lossy blocks,
    else a scan's buffers), its index nodes left out."""
    kind = node.get("Node Type", "")
    if kind == "Bitmap Heap Scan":
        return int(node.get("Exact Heap Blocks", 0)) + int(node.get("Lossy Heap Blocks", 0))
    if kind in ("Seq Scan", "Index Scan"):
        return int(node.get("Shared Hit Blocks", 0)) + int(node.get("Shared Read Blocks", 0))
    return sum(_heap_pages(child) for child in node.get("Plans", []))


def _zip_ordered(conn: Any, table: TableName) -> TableName:
    ordered = table.with_suffix(SORTED_SUFFIX)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ordered.ident))
    conn.execute(
        sql.SQL("CREATE TABLE {} AS SELECT * FROM {} ORDER BY {}").format(
            ordered.ident, table.ident, sql.Identifier(PARTITION_COLUMN)
        )
    )
    conn.execute(
        sql.SQL("CREATE INDEX ON {} ({})").format(ordered.ident, sql.Identifier(PARTITION_COLUMN))
    )
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(ordered.ident))
    return ordered


def measure(url: str, table: TableName, sample: int, *, sorted_copy: bool = True) -> list[str]:
    raw = describe_table(url, table)
    keys = sorted(k for k in raw.sizes if k)
    step = max(1, len(keys) // sample)
    chosen = keys[::step][:sample]
    rows = sum(raw.sizes[k] for k in chosen)
    lines = []
    with connect(url) as conn:
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table.ident))
        ordered = _zip_ordered(conn, table) if sorted_copy else None
        for name, t in (("as loaded", table), ("zip order", ordered)):
            if t is None:
                continue
            pages = _pages(conn, t)
            for key in chosen[:3]:  # warm: the first reads pay for the cache
                _explain(conn, t, key)
            visited, ms, in_buffers = zip(*(_explain(conn, t, key) for key in chosen), strict=True)
            per_run = sum(visited) / rows * raw.rows  # all partitions, same rows per page
            lines.append(
                f"{name:>9}: {len(chosen)} of {len(keys):,} partitions, {rows / len(chosen):,.0f} "
                f"rows each: {statistics.mean(visited):,.1f} heap pages/partition, "
                f"{per_run / max(1, pages):.1f}x the table's {pages:,} pages over a run; "
                f"{statistics.mean(in_buffers):.0%} of the read's buffers in shared_buffers; "
                f"read {statistics.median(ms):.3f} ms/partition (median, indicative)"
            )
            print(lines[-1], flush=True)
        if ordered is not None:
            conn.execute(sql.SQL("DROP TABLE {}").format(ordered.ident))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", help="an existing table of the bench cluster")
    parser.add_argument("--rows", type=int, default=80, help="rows per partition (generated)")
    parser.add_argument("--partitions", type=int, default=4000, help="partitions (generated)")
    parser.add_argument("--sample", type=int, default=200, help="partitions explained")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cluster-dir", type=Path, default=BenchOptions.cluster_dir)
    parser.add_argument(
        "--as-loaded-only", action="store_true", help="no zip-ordered copy (big tables)"
    )
    args = parser.parse_args()
    with bench_server(Settings.load(), BenchOptions(cluster_dir=args.cluster_dir)) as (
        settings,
        server,
    ):
        try:
            if args.table:
                table = TableName.parse(args.table)
            else:
                table = ensure_uniform_table(
                    server.url, f"bench_readplan_{args.rows}", partitions=args.partitions,
                    rows_per_partition=args.rows, seed=args.seed,
                ).table  # fmt: skip
            measure(server.url, table, args.sample, sorted_copy=not args.as_loaded_only)
        finally:
            cleanup(settings)


if __name__ == "__main__":
    main()
