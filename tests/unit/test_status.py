"""How failures are grouped and a run is summarised."""

from __future__ import annotations

from etl_worker.pipeline import backoff
from etl_worker.status import RunStatus, _error_kind, format_status, partition_label


def test_errors_differing_only_by_zip_group_together() -> None:
    a = _error_kind("transform x failed on partition '10016': ValueError: bad")
    b = _error_kind("transform x failed on partition '02134': ValueError: bad")
    c = _error_kind("transform x failed on partition NULL: ValueError: bad")
    assert a == b == c


def test_partition_labels_show_null_and_split_ranges() -> None:
    assert partition_label(None) == "NULL"
    assert partition_label("") == ""
    assert partition_label("10016", 0, 500) == "10016[0,500)"


def test_the_summary_names_failures_and_how_to_retry_them() -> None:
    status = RunStatus(
        run_id="r1",
        raw_table="raw",
        target_table="clean",
        transform="m:f",
        mode="normal",
        total=3,
        states={"queued": 0, "started": 0, "retrying": 0, "finished": 2, "failed": 1},
        rows_read=30,
        rows_written=20,
        elapsed_seconds=2.0,
        rows_per_second=10.0,
        zips_per_minute=90.0,
        eta_seconds=None,
        peak_rss_bytes=100 * 2**20,
        memory_before_bytes=2000,
        memory_after_bytes=1000,
        largest_frame_bytes=1500,
        failures=[{"zip": "00003", "partition": "00003", "error": "boom", "attempts": 1}],
        failures_by_error={"boom": ["00003"]},
    )
    text = format_status(status)
    assert "3/3 partitions (100.0%)" in text
    assert "[1] boom" in text and "zips: 00003" in text
    assert "etl-enqueue --resume r1" in text


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for retries in range(8):
        delay = backoff(retries, base=2.0, cap=60.0)
        expected = min(60.0, 2.0 * 2**retries)
        assert expected / 2 <= delay <= expected
