"""etl-status on real runs: every field of --json, and --watch following a run to its end."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import IDENTITY, command_path, enqueue, run_json
from tests.support.data import make_raw_table
from tests.support.services import Stack, Worker

POISON = "tests.support.transforms:fail_on_poisoned_zips"


def test_status_json_reports_progress_throughput_failures_slowest_and_memory(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    rows = make_raw_table(stack.database_url, zips=6, rows_per_zip=5)  # 8 partitions
    poison = tmp_path / "poison.txt"
    poison.write_text("00001\n00004\n")
    start_worker(concurrency=2, ETL_TEST_POISON_FILE=str(poison))

    run_id = enqueue(stack, "--all-zips", "--wait", "--transform", POISON, check=False)
    status = run_json(stack, run_id.stdout.splitlines()[0])

    assert status["total"] == 8 and status["done"] == 8
    assert status["percent"] == 100.0 and status["complete"] is True
    assert status["states"] == {
        "queued": 0,
        "started": 0,
        "retrying": 0,
        "finished": 6,
        "failed": 2,
        "superseded": 0,
        "cancelled": 0,
    }
    assert status["superseded_by"] == {} and status["refused_messages"] == 0
    assert status["rows_read"] == status["rows_written"] == rows - 10
    assert status["elapsed_seconds"] > 0
    assert status["rows_per_second"] > 0 and status["zips_per_minute"] > 0
    assert status["eta_seconds"] is None  # nothing left to wait for
    # Two zips failing the same way are one group, whatever zip the message names.
    assert sorted(f["zip"] for f in status["failures"]) == ["00001", "00004"]
    [(error, zips)] = status["failures_by_error"].items()
    assert "ValueError: cannot parse revenue for zip <zip>" in error
    assert zips == ["00001", "00004"]
    slowest = status["slowest"]
    assert len(slowest) == 5
    assert [s["seconds"] for s in slowest] == sorted((s["seconds"] for s in slowest), reverse=True)
    assert all(s["worker"] for s in slowest)
    assert status["peak_rss_bytes"] > 10 * 2**20  # a worker process holds pandas at least
    assert status["memory_before_bytes"] >= status["memory_after_bytes"] > 0
    assert status["largest_frame_bytes"] > 0


def test_status_watch_refreshes_until_the_run_ends(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    make_raw_table(stack.database_url, zips=3)  # 5 partitions
    run_id = enqueue(stack, "--all-zips", "--transform", IDENTITY).stdout.splitlines()[0]
    watch = subprocess.Popen(
        [command_path("etl-status"), run_id, "--watch", "--json", "--interval", "0.3"],
        env=stack.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        first = json.loads(watch.stdout.readline())  # no worker yet: nothing can be done
        assert first["done"] == 0 and first["complete"] is False
        assert first["states"]["queued"] == 5

        start_worker(concurrency=2)

        rest, _ = watch.communicate(timeout=120)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    refreshes = [json.loads(line) for line in rest.splitlines()]
    assert watch.returncode == 0
    assert refreshes, "watch printed nothing after the first refresh"
    assert refreshes[-1]["complete"] is True and refreshes[-1]["states"]["finished"] == 5
    assert [r["done"] for r in refreshes] == sorted(r["done"] for r in refreshes)
