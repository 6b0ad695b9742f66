"""Is etl-worker linear in rows? The same run at several table sizes (1M, 10M, 50M rows).

For each size: a generated table (seeded once, kept in the benchmark's cluster and reused;
the mean partition is the same at every size, 1,250 rows by default, so the 50M-row table
has 40,000 zips), `etl-enqueue --all-zips` on it as a user runs it (listing included, no
worker consuming), then the whole table through the fleet with identity: wall time per
row, the workers' peak RSS, and `etl-status` on the finished run. The output is checked by
its row count (the main lines check exactness row by row).

Each size is recorded in a JSON file as soon as it is measured, so the sizes can run on
different days (`--scale 50000000` alone takes the longest); every `etl-bench` report and
the chart are drawn from everything recorded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg import sql

from etl_worker.bench.data import ensure_raw_table
from etl_worker.bench.fleet import enqueue_line, fleet, run_through_fleet, status_seconds
from etl_worker.bench.inprocess import IDENTITY
from etl_worker.bench.measure import Server, drop_tables
from etl_worker.config import Settings
from etl_worker.db import TableName, connect
from etl_worker.errors import EtlError

#: Rows per zip, the same at every size: 50M rows / 1,250 = the 40,000 zips of issue 13.
PARTITION_ROWS = 1_250


def load(path: Path) -> dict[str, Any]:
    """What is recorded so far ({"runs": {rows: run}}); empty when nothing is."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record(path: Path, run: dict[str, Any]) -> None:
    data = load(path)
    data.setdefault("runs", {})[str(run["rows"])] = run
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))


def measure_size(
    settings: Settings,
    server: Server,
    rows: int,
    *,
    procs: int,
    seed: int,
    partition_rows: int,
    log_path: Path,
) -> dict[str, Any]:
    """One size of the series (see the module doc)."""
    zips = max(1, rows // partition_rows)
    table = ensure_raw_table(server.url, f"bench_scale_{rows}", rows=rows, zips=zips, seed=seed)
    enqueue = enqueue_line(settings, table)
    target = TableName(f"bench_scale_{rows}_target")
    with fleet(settings, server, procs, log_path) as workers:
        seconds, usage, report = run_through_fleet(workers, table.table, target, IDENTITY)
    status = status_seconds(settings, report["run_id"])
    with connect(server.url) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target.ident)).fetchone()
    drop_tables(server.url, target)
    if row is None or int(row[0]) != table.rows:
        raise EtlError(
            f"the {rows:,}-row scaling run wrote {row[0] if row else 0:,} rows, not "
            f"{table.rows:,} — see the worker log {log_path}"
        )
    return {
        "rows": table.rows,
        "zips": len(table.sizes),
        "partitions": report["total"],
        "seconds": seconds,
        "microseconds_per_row": seconds / table.rows * 1e6,
        "peak_rss_bytes": report["peak_rss_bytes"],
        "largest_frame_bytes": report["largest_frame_bytes"],
        "postgres_cpu": usage.postgres_cpu,
        "client_cpu": usage.client_cpu,
        "status_seconds": status,
        "enqueue_seconds": enqueue.seconds,
        "enqueue_partitions": enqueue.extra["partitions"],
        "table_bytes": table.bytes,
        "procs": procs,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(),
    }


def run_series(
    settings: Settings,
    server: Server,
    sizes: list[int],
    *,
    procs: int,
    seed: int,
    partition_rows: int,
    results: Path,
    log_path: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    for rows in sizes:
        say(f"scaling: {rows:,} rows in zips of ~{partition_rows:,} rows ...")
        run = measure_size(
            settings, server, rows, procs=procs, seed=seed, partition_rows=partition_rows,
            log_path=log_path,
        )  # fmt: skip
        _record(results, run)
        say(
            f"  {run['seconds']:.1f} s, {run['microseconds_per_row']:.2f} µs/row, peak RSS "
            f"{run['peak_rss_bytes'] / 1e6:,.0f} MB, etl-status {run['status_seconds']:.2f} s, "
            f"enqueue {run['enqueue_seconds']:.2f} s"
        )
    return load(results)


def table_lines(scaling: dict[str, Any]) -> list[str]:
    """The series as a Markdown table, smallest first."""
    runs = sorted(scaling.get("runs", {}).values(), key=lambda r: r["rows"])
    if not runs:
        return []
    lines = [
        "| rows | zips / tasks | wall s | µs per row | worker peak RSS | etl-status | "
        "enqueue (listing included) | measured |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r['rows']:,} | {r['zips']:,} / {r['partitions']:,} | {r['seconds']:,.1f} | "
            f"{r['microseconds_per_row']:.2f} | {r['peak_rss_bytes'] / 1e6:,.0f} MB | "
            f"{r['status_seconds']:.2f} s | {r['enqueue_seconds']:.2f} s | "
            f"{r['measured_at'][:16]} |"
        )
    return lines
