"""`python -m etl_worker.bench.changes`: what issue 15 costs and saves, measured, written to
BENCHMARKS.md's "Contracts and incremental runs" section (etl-bench keeps it).

- the fingerprint pass of `--changed-since` (one GROUP BY over the raw table) against the
  COPY read floor (the raw table out of Postgres with binary COPY, drained, no decoding);
  every `--all-zips` run makes this pass at enqueue, to record the fingerprints;
- a full run against an incremental run with ~2% of the zips changed, through real workers;
- the demo contract (examples.contracts:CleanCompanies) per million rows, on the clean
  transform's output as the workers check it: on each partition, and on one big frame.

It runs on the Postgres of ETL_DATABASE_URL, in a database of its own (`<name>_changes`),
and Redis under a key prefix of its own. Run it from the repository root (the contract is
imported from `examples`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
from psycopg import sql

from etl_worker import contracts, producer
from etl_worker.audit import RunSpec
from etl_worker.bench.data import PARTITION_COLUMN, describe_table, ensure_raw_table
from etl_worker.bench.fleet import fleet, run_through_fleet
from etl_worker.bench.measure import Server
from etl_worker.config import Settings
from etl_worker.context import WorkerContext
from etl_worker.db import TableName, connect, find_column, table_columns, with_database
from etl_worker.fingerprint import allowed_modules
from etl_worker.fingerprints import all_fingerprints
from etl_worker.partition import PartitionKey
from etl_worker.pipeline import transform_partition
from etl_worker.reporting.progress import wait_for_run

SECTION = "## Contracts and incremental runs"
CONTRACT = "examples.contracts:CleanCompanies"
TRANSFORM = "etl_worker.transforms:clean_companies"


def _median_seconds(action: Any, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def copy_read_floor(url: str, raw: TableName) -> float:
    """Seconds to get every row out with binary COPY, drained and not decoded."""
    with connect(url) as conn, conn.cursor() as cur:

        def drain() -> None:
            query = sql.SQL("COPY {} TO STDOUT (FORMAT binary)").format(raw.ident)
            with cur.copy(query) as copy:
                for _ in copy:
                    pass

        return _median_seconds(drain)


def fingerprint_costs(url: str, raw: TableName) -> dict[str, float]:
    with connect(url) as conn:
        column = find_column(table_columns(conn, raw), PARTITION_COLUMN, raw)
        one_pass = _median_seconds(lambda: all_fingerprints(conn, raw, column))
    return {"pass": one_pass}


def contract_cost(settings: Settings, raw: TableName, max_rows: int) -> dict[str, float]:
    """The contract's check time per million rows, per partition and on one big frame."""
    ctx = WorkerContext(settings)
    spec = RunSpec("bench", str(raw), str(raw), PARTITION_COLUMN, TRANSFORM, mode="dry_run")
    run = ctx.prepare_run(spec)
    # The demo contract lives in examples/, outside the shipped modules.
    schema = contracts.load_contract(CONTRACT, allowed_modules(["examples"]))
    with connect(settings.database_url) as conn:
        keys = [k for k in all_fingerprints(conn, raw, run.partition_column)]
    tables, rows, per_partition, failed = [], 0, 0.0, 0
    for key in sorted(keys, key=str):
        data = transform_partition(ctx, run, PartitionKey(key)).data
        checked = contracts.check(schema, data, sample_rows=5)
        per_partition += checked.seconds
        failed += checked.details is not None
        tables.append(data)
        rows += data.num_rows
        if rows >= max_rows:
            break
    big = pa.concat_tables(tables).combine_chunks()
    one = contracts.check(schema, big, sample_rows=5)
    ctx.close()
    return {
        "rows": rows,
        "partitions": len(tables),
        "failed_partitions": failed,
        "per_partition_seconds_per_million": per_partition / rows * 1e6,
        "per_partition_ms": per_partition / len(tables) * 1e3,
        "one_frame_seconds_per_million": one.seconds / big.num_rows * 1e6,
    }


def full_and_incremental(
    settings: Settings, raw: TableName, procs: int, changed_share: float, log_dir: Path
) -> dict[str, Any]:
    target = TableName("changes_target")
    server = Server(settings.database_url)
    with fleet(settings, server, procs, log_dir / "changes-worker.log") as workers:
        full_seconds, _, full = run_through_fleet(workers, raw, target, TRANSFORM)
        with connect(settings.database_url) as conn:
            zips = [
                r[0]
                for r in conn.execute(
                    sql.SQL("SELECT DISTINCT {} FROM {} ORDER BY 1").format(
                        sql.Identifier(PARTITION_COLUMN), raw.ident
                    )
                )
            ]
            every = max(1, round(1 / changed_share))
            changed = zips[::every]
            update = sql.SQL(
                "UPDATE {} SET notes = coalesce(notes, '') || ' changed' WHERE {} = ANY(%s)"
            ).format(raw.ident, sql.Identifier(PARTITION_COLUMN))
            rows_changed = conn.execute(update, (changed,)).rowcount
        incremental_settings = settings.replace(
            raw_table=str(raw), target_table=str(target), transform=TRANSFORM
        )
        started = time.time()
        result = producer.enqueue_run(incremental_settings, changed_since=full["run_id"])
        status = wait_for_run(incremental_settings, result.run_id, poll_seconds=0.5, show=False)
        with connect(settings.database_url) as conn:
            last = sql.SQL("SELECT max(finished_at) FROM {}.partitions WHERE run_id = %s")
            audit = sql.Identifier(settings.audit_schema)
            row = conn.execute(last.format(audit), (result.run_id,)).fetchone()
        finished = row[0].timestamp() if row and row[0] else time.time()
    return {
        "full_seconds": full_seconds,
        "full_partitions": full["total"],
        "incremental_seconds": finished - started,
        "incremental_enqueue_seconds": result.seconds,
        "incremental_partitions": status.total,
        "incremental": result.incremental,
        "zips_changed": len(changed),
        "zips": len(zips),
        "rows_changed": rows_changed,
    }


def render(args: argparse.Namespace, table: Any, results: dict[str, Any]) -> str:
    fp, floor, run, contract = (
        results["fingerprints"],
        results["copy_floor"],
        results["runs"],
        results["contract"],
    )
    load = results["load"]
    command = (
        f"python -m etl_worker.bench.changes --rows {args.rows} --zips {args.zips} "
        f"--procs {args.procs} --changed {args.changed}"
    )
    incremental = run["incremental"]
    met = run["incremental_seconds"] <= 0.1 * run["full_seconds"]
    return "\n".join(
        [
            SECTION,
            "",
            f"Written by `{command}` on {results['when']}, on the shared Postgres "
            f"(127.0.0.1, a database of its own) with {args.procs} worker processes. "
            f"Table: {table.rows:,} `etl-seed` rows, {table.megabytes:,.1f} MB, "
            f"{len(table.sizes):,} zips. The machine was loaded by other sessions: load average "
            f"{load[0]} before, {load[1]} after (2 cores), so the absolute seconds are high; "
            "the ratios are what to read.",
            "",
            "| what | measured |",
            "| --- | ---: |",
            f"| full run, {TRANSFORM.split(':')[1]}, {run['full_partitions']:,} partitions "
            f"(enqueue, with its fingerprint pass, to last finished) "
            f"| {run['full_seconds']:.1f} s |",
            f"| incremental run, {run['zips_changed']:,} of {run['zips']:,} zips changed "
            f"({run['rows_changed']:,} rows), `--changed-since` the full run: "
            f"{run['incremental_partitions']:,} partitions enqueued, "
            f"{incremental['skipped_total']:,} skipped | {run['incremental_seconds']:.1f} s "
            f"({run['incremental_seconds'] / run['full_seconds']:.0%} of full) |",
            f"| of which the fingerprint pass (one GROUP BY over the raw table) | "
            f"{incremental['fingerprint_seconds']:.2f} s |",
            f"| goal: incremental ≤ 10% of full | {'met' if met else '**not met**'} "
            "(the fingerprint pass is most of the incremental run) |",
            f"| fingerprint pass alone (every `--all-zips` run makes it at enqueue), median of 3 "
            f"| {fp['pass']:.2f} s "
            f"({fp['pass'] / floor:.2f} × the COPY read floor) |",
            f"| COPY read floor: binary `COPY raw TO STDOUT`, drained, median of 3 "
            f"| {floor:.2f} s |",
            f"| contract `{CONTRACT}`, checked per partition ({contract['partitions']:,} "
            f"partitions, {contract['rows']:,} rows; {contract['failed_partitions']:,} break it) "
            f"| {contract['per_partition_seconds_per_million']:.1f} s per million rows "
            f"({contract['per_partition_ms']:.0f} ms per partition) |",
            f"| the same contract on one {contract['rows']:,}-row frame | "
            f"{contract['one_frame_seconds_per_million']:.1f} s per million rows |",
            "",
        ]
    )


def write_section(path: Path, text: str) -> None:
    """Replace the section in BENCHMARKS.md (or append it)."""
    current = path.read_text() if path.exists() else ""
    start = current.find(SECTION)
    if start < 0:
        path.write_text(current.rstrip("\n") + "\n\n" + text)
        return
    end = current.find("\n## ", start + len(SECTION))
    rest = "" if end < 0 else current[end:]
    path.write_text(current[:start] + text + rest)


def rerender(log_line: str, args: argparse.Namespace) -> str:
    """The section again from the results a run printed (its last dict line), e.g. after a
    wording change: the same numbers."""
    import ast

    results = ast.literal_eval(log_line)
    base = Settings.load()
    table = describe_table(base.database_url, TableName("bench_changes_raw"))
    return render(args, table, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--zips", type=int, default=200)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--changed", type=float, default=0.02, help="share of zips changed")
    parser.add_argument("--contract-rows", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument(
        "--rerender", type=Path, help="write the section from this earlier run's output instead"
    )
    args = parser.parse_args()
    if args.rerender:
        line = next(x for x in args.rerender.read_text().splitlines() if x.startswith("{"))
        write_section(args.output, rerender(line, args))
        return
    base = Settings.load()
    url = with_database(base.database_url, base.database_url.rpartition("/")[2] + "_changes")
    tag = uuid.uuid4().hex[:8]
    settings = base.replace(
        database_url=url, redis_key_prefix=f"etl-changes-{tag}:", queue=f"etl-changes-{tag}"
    )
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    table = ensure_raw_table(url, "bench_changes_raw", rows=args.rows, zips=args.zips, seed=42)
    raw = table.table
    results: dict[str, Any] = {"when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    results["copy_floor"] = copy_read_floor(url, raw)
    results["fingerprints"] = fingerprint_costs(url, raw)
    results["contract"] = contract_cost(settings, raw, args.contract_rows)
    results["runs"] = full_and_incremental(settings, raw, args.procs, args.changed, Path("/tmp"))
    results["load"] = (load_before, " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(results)
    write_section(args.output, render(args, table, results))
    print(f"wrote {SECTION!r} to {args.output} ({psutil.cpu_count()} cores)")


if __name__ == "__main__":
    main()
