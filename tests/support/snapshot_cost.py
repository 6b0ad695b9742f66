"""docs/reliability.md's "What holding the snapshot costs": a run with and without
`--snapshot`, and what an open exported snapshot does to VACUUM on a table being updated.

    python -m tests.support.snapshot_cost [--zips 200] [--rows-per-zip 500] [--runs 2]

Uses a database, Redis prefix and worker of its own (removed after). Prints Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from etl_worker.snapshot import ExportedSnapshot
from tests.support.cli import IDENTITY, enqueue
from tests.support.data import make_raw_table
from tests.support.services import (
    BASE_BROKER_URL,
    Stack,
    Worker,
    create_database,
    drop_database,
)


def timed_run(stack: Stack, *flags: str) -> float:
    started = time.perf_counter()
    enqueue(stack, "--all-zips", "--wait", *flags, "--transform", IDENTITY)
    return time.perf_counter() - started


def vacuum_after_update(url: str, hold: bool) -> tuple[int, int]:
    """Update every raw row twice with a VACUUM between, a snapshot held or not: returns
    (dead rows VACUUM could not remove, table bytes after the second update)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM FULL raw_companies")
        snapshot = ExportedSnapshot(url, network_timeout=15) if hold else None
        try:
            conn.execute("UPDATE raw_companies SET notes = notes")
            conn.execute("VACUUM raw_companies")
            time.sleep(1)  # the statistics VACUUM reports reach pg_stat after a moment
            dead = conn.execute(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'raw_companies'"
            ).fetchone()
            conn.execute("UPDATE raw_companies SET notes = notes")
            size = conn.execute("SELECT pg_relation_size('raw_companies')").fetchone()
        finally:
            if snapshot is not None:
                snapshot.close()
    assert dead is not None and size is not None
    return int(dead[0]), int(size[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zips", type=int, default=200)
    parser.add_argument("--rows-per-zip", type=int, default=500)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    url = create_database(prefix="etl_snapcost")
    tag = uuid.uuid4().hex[:10]
    stack = Stack(url, BASE_BROKER_URL, f"etlsnap-{tag}:", f"etl-{tag}")
    with tempfile.TemporaryDirectory() as tmp:
        worker = Worker(stack.env, Path(tmp) / "worker.log", concurrency=2).wait_ready()
        try:
            rows = make_raw_table(url, zips=args.zips, rows_per_zip=args.rows_per_zip)
            timed_run(stack)  # warm-up: target created, workers' imports done
            plain = [timed_run(stack) for _ in range(args.runs)]
            held = [timed_run(stack, "--snapshot") for _ in range(args.runs)]
        finally:
            worker.stop()
    dead_free, size_free = vacuum_after_update(url, hold=False)
    dead_held, size_held = vacuum_after_update(url, hold=True)
    drop_database(url)
    print(f"{rows:,} rows in {args.zips + 2} partitions, 1 worker (-c 2), identity transform\n")
    print(f"| | run (median of {args.runs}) | dead rows VACUUM left | table after 2nd update |")
    print("| --- | --- | --- | --- |")
    print(
        f"| without --snapshot | {statistics.median(plain):.2f} s | {dead_free:,} | "
        f"{size_free / 2**20:.1f} MiB |"
    )
    print(
        f"| with --snapshot held | {statistics.median(held):.2f} s | {dead_held:,} | "
        f"{size_held / 2**20:.1f} MiB |"
    )


if __name__ == "__main__":
    main()
