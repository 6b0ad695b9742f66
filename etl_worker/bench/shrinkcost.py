"""What downcasting the transform's output (frames.shrink) costs and saves in a worker:
a partition read, transformed and cast for the write as `pipeline.transform_partition`
does it, with and without the shrink, each in a new process (forked, warmed up the way a
pool process is) so that every peak is measured from the same start:

    python -m etl_worker.bench.shrinkcost --rows 10000,200000 --repeat 3

For each partition size and transform: the output frame's bytes before and after the
shrink, the time of the shrink and of the cast for the write (`load.to_arrow`), and the
process's peak RSS over its warm RSS for the whole partition, median of `--repeat`
processes. The peak is a kernel high-water mark (memory.py): not a timing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from pathlib import Path
from typing import Any

from etl_worker import memory
from etl_worker.audit import RunSpec
from etl_worker.bench.data import PARTITION_COLUMN, ensure_uniform_table
from etl_worker.bench.inprocess import CLEAN, IDENTITY
from etl_worker.bench.runner import BenchOptions, bench_server, cleanup
from etl_worker.config import Settings
from etl_worker.context import WorkerContext
from etl_worker.extract import predicate, read_arrow, select_sql
from etl_worker.frames import frame_memory, shrink, to_frame
from etl_worker.load import to_arrow, warm_up
from etl_worker.partition import PartitionKey

TABLE = "bench_shrink_{rows}"


def _one(
    settings: Settings, raw: str, key: str, transform: str, use_shrink: bool
) -> dict[str, Any]:
    """One partition in this (new) process; returns its measures."""
    ctx = WorkerContext(settings)
    try:
        run = ctx.prepare_run(RunSpec("shrinkcost", raw, raw, PARTITION_COLUMN, transform))
        warm_up()
        ctx.adbc  # noqa: B018 -- connected before the peak is reset, as in a warm worker
        memory.reset_peak()
        start = memory.current_rss()
        where, params = predicate(PartitionKey(key), run.partition_column)
        table = read_arrow(
            ctx.adbc, ctx.audit.bind(select_sql(run.raw, where), params), run.raw_columns
        )
        frame = to_frame(table)
        del table
        result = run.transform(frame)
        del frame
        before = frame_memory(result)
        after = before
        shrink_seconds = 0.0
        if use_shrink:
            started = time.perf_counter()
            result, before, after = shrink(result)
            shrink_seconds = time.perf_counter() - started
        started = time.perf_counter()
        data = to_arrow(result, run.target_schema)
        cast_seconds = time.perf_counter() - started
        del result, data
        peak = memory.peak_rss() - start
    finally:
        ctx.close()
    return {
        "before": before,
        "after": after,
        "shrink_s": shrink_seconds,
        "cast_s": cast_seconds,
        "peak": peak,
    }


def _in_child(args: tuple[Any, ...]) -> dict[str, Any]:
    return _one(*args)


def measure(settings: Settings, url: str, sizes: list[int], repeat: int, seed: int) -> list[str]:
    lines = []
    context = multiprocessing.get_context("fork")
    for rows in sizes:
        table = ensure_uniform_table(
            url, TABLE.format(rows=rows), partitions=2, rows_per_partition=rows, seed=seed
        )
        key = sorted(k for k in table.sizes if k)[0]
        for transform in (IDENTITY, CLEAN):
            for use_shrink in (True, False):
                runs = []
                for _ in range(repeat):
                    with context.Pool(1, maxtasksperchild=1) as pool:
                        args = (settings, str(table.table), key, transform, use_shrink)
                        runs.append(pool.apply(_in_child, (args,)))
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                lines.append(
                    f"{rows:>7,} rows {transform.rsplit(':', 1)[1]:>15} "
                    f"shrink={'yes' if use_shrink else 'no ':3}  "
                    f"frame {med['before'] / 1e6:7.2f} MB -> {med['after'] / 1e6:7.2f} MB  "
                    f"shrink {med['shrink_s'] * 1000:7.1f} ms  "
                    f"to_arrow {med['cast_s'] * 1000:7.1f} ms  peak over warm "
                    f"{med['peak'] / 1e6:7.1f} MB = {med['peak'] / med['before']:.2f} x frame"
                )
                print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000,200000", help="partition sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cluster-dir", type=Path, default=BenchOptions.cluster_dir)
    args = parser.parse_args()
    sizes = [int(s) for s in args.rows.split(",") if s.strip()]
    with bench_server(Settings.load(), BenchOptions(cluster_dir=args.cluster_dir)) as (
        settings,
        server,
    ):
        try:
            measure(settings, server.url, sizes, args.repeat, args.seed)
        finally:
            cleanup(settings)


if __name__ == "__main__":
    main()
