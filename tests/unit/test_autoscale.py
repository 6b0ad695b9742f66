"""The memory cap of the autoscaler, and the memory it reads: pure arithmetic and files."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl_worker.memory import cgroup_room
from etl_worker.ops.autoscale import memory_cap

MiB = 2**20


def test_the_cap_is_how_many_processes_of_the_measured_need_fit_the_budget() -> None:
    cap = memory_cap(1000 * MiB, 300 * MiB, low=1, high=8, source="audit")

    assert cap.processes == 3
    assert cap.describe() == (
        "memory allows 3 pool process(es): budget 1,000 MiB / 300 MiB per process (audit)"
    )


@pytest.mark.parametrize(
    ("budget", "low", "high", "expected"),
    [
        (10_000, 1, 4, 4),  # memory for 100: still no more than --autoscale's max
        (150, 1, 4, 1),  # memory for 1
        (50, 1, 4, 1),  # memory for none: one process all the same, a node that runs nothing
        (50, 0, 4, 1),  # ... helps no one, even with --autoscale=4,0
        (50, 2, 4, 2),  # never below --autoscale's min: the operator asked for it
    ],
)
def test_the_cap_stays_within_the_autoscale_bounds(
    budget: int, low: int, high: int, expected: int
) -> None:
    assert memory_cap(budget * MiB, 100 * MiB, low=low, high=high).processes == expected


def write_cgroup(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def test_cgroup_v2_room_is_the_limit_minus_usage_not_counting_reclaimable_cache(
    tmp_path: Path,
) -> None:
    (tmp_path / "cgroup").write_text("0::/docker/abc\n")
    write_cgroup(
        tmp_path / "fs/docker/abc",
        {
            "memory.max": f"{1024 * MiB}\n",
            "memory.current": f"{600 * MiB}\n",
            "memory.stat": f"anon {400 * MiB}\ninactive_file {100 * MiB}\n",
        },
    )

    assert cgroup_room(tmp_path / "cgroup", tmp_path / "fs") == 524 * MiB


def test_cgroup_v1_room_reads_the_memory_controller(tmp_path: Path) -> None:
    (tmp_path / "cgroup").write_text("5:cpu:/x\n4:memory:/job\n0::/\n")
    write_cgroup(
        tmp_path / "fs/memory/job",
        {
            "memory.limit_in_bytes": f"{512 * MiB}\n",
            "memory.usage_in_bytes": f"{300 * MiB}\n",
            "memory.stat": f"total_inactive_file {50 * MiB}\n",
        },
    )

    assert cgroup_room(tmp_path / "cgroup", tmp_path / "fs") == 262 * MiB


def test_a_container_seeing_the_host_s_cgroup_path_reads_its_own_cgroup_at_the_mount(
    tmp_path: Path,
) -> None:
    # Docker on cgroup v1: /proc/self/cgroup names /docker/<id>, as the host sees it, but the
    # container has only its own memory cgroup, mounted at /sys/fs/cgroup/memory.
    (tmp_path / "cgroup").write_text("4:memory:/docker/abc\n0::/docker/abc\n")
    write_cgroup(
        tmp_path / "fs/memory",
        {
            "memory.limit_in_bytes": f"{3072 * MiB}\n",
            "memory.usage_in_bytes": f"{200 * MiB}\n",
            "memory.stat": f"total_inactive_file {10 * MiB}\n",
        },
    )

    assert cgroup_room(tmp_path / "cgroup", tmp_path / "fs") == 2882 * MiB


@pytest.mark.parametrize("limit", ["max", str(2**63 - 4096)])
def test_an_unlimited_cgroup_has_no_room_limit(tmp_path: Path, limit: str) -> None:
    (tmp_path / "cgroup").write_text("0::/\n")
    write_cgroup(
        tmp_path / "fs",
        {"memory.max": limit, "memory.current": "1000", "memory.stat": "inactive_file 0\n"},
    )

    assert cgroup_room(tmp_path / "cgroup", tmp_path / "fs") is None


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_room(tmp_path / "missing", tmp_path) is None
