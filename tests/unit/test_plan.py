"""etl-plan's arithmetic: percentiles, processes per machine, machines for a wall time."""

from __future__ import annotations

import math

import pytest

from etl_worker.ops.plan import (
    HEADROOM,
    MACHINE_RESERVE_BYTES,
    Machine,
    PartitionSizes,
    Plan,
    Sample,
    format_plan,
    nearest_rank,
    recommend,
    sizing_warnings,
)

GiB = 2**30


def table(total_rows: int = 36_000_000, partitions: int = 1_000) -> PartitionSizes:
    return PartitionSizes(partitions, total_rows, p50=10, p99=900, largest=[("10016", 10_000)])


def largest(peak: int, rows: int = 10_000, seconds: float = 1.0) -> Sample:
    return Sample("10016", rows, "largest", peak_rss_bytes=peak, seconds=seconds)


def test_percentiles_are_values_that_occur_by_nearest_rank() -> None:
    values = list(range(1, 101))

    assert nearest_rank(values, 50) == 50
    assert nearest_rank(values, 99) == 99
    assert nearest_rank([7], 99) == 7
    assert nearest_rank([], 50) == 0


def test_big_partitions_bound_concurrency_by_memory() -> None:
    sizing = recommend(table(), [largest(3 * GiB)], Machine(16 * GiB, cpus=8))

    assert sizing is not None
    assert sizing.process_bytes == math.ceil(3 * GiB * HEADROOM)
    assert sizing.by_memory == (16 * GiB - MACHINE_RESERVE_BYTES) // sizing.process_bytes == 4
    assert sizing.concurrency == 4


def test_small_partitions_bound_concurrency_by_cpus() -> None:
    sizing = recommend(table(), [largest(GiB // 4)], Machine(16 * GiB, cpus=4))

    assert sizing is not None
    assert sizing.by_memory > 4
    assert sizing.concurrency == 4


def test_machines_cover_rows_and_the_per_partition_overhead_in_the_wall_time() -> None:
    # 10,000 rows/s per process; the median partition (10 rows) costs 0.1 s on top of its rows.
    median = Sample("00501", 10, "median", peak_rss_bytes=GiB // 4, seconds=0.101)

    sizing = recommend(table(), [largest(GiB // 4), median], Machine(16 * GiB, 4, hours=0.1))

    assert sizing is not None
    assert sizing.rows_per_second == 10_000
    assert sizing.partition_overhead_seconds == pytest.approx(0.1)
    # (1,000 partitions x 0.1 s + 36,000,000 rows / 10,000 rows/s) / 4 processes = 925 s.
    assert sizing.machine_hours == pytest.approx(925 / 3600)
    assert sizing.machines == 3
    assert sizing.connections == 3 * 4 * 3


def test_a_machine_too_small_for_one_process_gets_no_concurrency_and_a_warning() -> None:
    sizing = recommend(table(), [largest(6 * GiB)], Machine(4 * GiB, cpus=4, hours=1))

    assert sizing is not None
    assert sizing.concurrency == 0 and sizing.machines is None
    [warning] = sizing_warnings(sizing, max_connections=100)
    assert "cannot run even one" in warning and "bigger machines" in warning


def test_a_fleet_over_max_connections_is_warned_about() -> None:
    sizing = recommend(table(total_rows=10**10), [largest(GiB // 4)], Machine(16 * GiB, 8, 1))

    assert sizing is not None and sizing.connections is not None
    [warning] = sizing_warnings(sizing, max_connections=sizing.connections - 1)
    assert f"over max_connections {sizing.connections - 1}" in warning


def test_without_a_measured_partition_there_is_no_sizing() -> None:
    failed = Sample("10016", 10_000, "largest", error="over the memory ceiling")

    assert recommend(table(), [failed], Machine(16 * GiB, cpus=4)) is None


def test_the_report_gives_the_sizing_and_the_worker_settings_to_use() -> None:
    sizes = table()
    samples = [largest(GiB // 2, rows=10_000, seconds=0.5)]
    sizing = recommend(sizes, samples, Machine(16 * GiB, cpus=4, hours=2))
    report = Plan(
        "raw_companies",
        "zip_code",
        "etl_worker.transforms:clean_companies",
        True,
        False,
        sizes,
        samples,
        sizing,
        max_connections=100,
        warnings=["a warning"],
    )

    text = format_plan(report)

    expected = [
        "36,000,000 rows in 1,000 partitions by zip_code",
        "largest 10,000  p99 900  p50 10",
        "concurrency 4 (memory allows 24, CPUs 4)",
        "machines   1 for 2 h (4 processes, 12 Postgres connections of 100)",
        "ETL_PROCESS_MEMORY=640MiB ETL_MAX_MEMORY_PER_CHILD=640MiB",
        "celery -A etl_worker worker --autoscale=4,1",
    ]
    assert [line for line in expected if line not in text] == []
    assert text.endswith("warning    a warning")
