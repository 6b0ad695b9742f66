"""How failures are grouped and a run is summarised."""

from __future__ import annotations

from etl_worker.reporting.status import _error_kind, format_status
from tests.support.status import NO_FAILURES, make_status, states


def test_errors_differing_only_by_zip_group_together() -> None:
    a = _error_kind("transform x failed on partition 10016: ValueError: bad", "10016")
    b = _error_kind("transform x failed on partition 02134: ValueError: bad", "02134")
    c = _error_kind("transform x failed on partition NULL: ValueError: bad", None)
    d = _error_kind("transform x failed on partition 'NULL': ValueError: bad", "NULL")
    assert a == b == c == d


def test_errors_recorded_by_earlier_versions_with_quoted_zips_group_together() -> None:
    a = _error_kind("transform x failed on partition '10016': ValueError: bad")
    b = _error_kind("transform x failed on partition '02134'[0, 500): ValueError: bad")
    assert a == b == "transform x failed on partition <zip>: ValueError: bad"


def test_errors_that_name_the_zip_in_the_users_own_words_group_together() -> None:
    a = _error_kind("failed on partition 10016: ValueError: bad revenue for zip 10016", "10016")
    b = _error_kind("failed on partition 02134: ValueError: bad revenue for zip 02134", "02134")
    other = _error_kind("failed on partition 02134: KeyError: 'revenue'", "02134")

    assert a == b == "failed on partition <zip>: ValueError: bad revenue for zip <zip>"
    assert other != a


def test_a_zip_inside_a_longer_number_is_not_replaced() -> None:
    text = _error_kind("value 100160 out of range", "10016")

    # Not "value <zip>0": the number is a value, normalised like every other one.
    assert text == "value <n> out of range"


def test_values_are_not_part_of_an_errors_kind() -> None:
    a = _error_kind("ValueError: Float value 3.5 is not allowed (12 rows)", "10016")
    b = _error_kind("ValueError: Float value 5.5 is not allowed (1,203 rows)", "02134")
    c = _error_kind("cannot cast 'abc' to int64", "10016")
    d = _error_kind("cannot cast 'it''s' to int64", "10016")

    assert a == b == "ValueError: Float value <n> is not allowed (<n> rows)"
    assert c == d == "cannot cast '<v>' to int64"
    # Numbers inside names are not values.
    assert _error_kind("column col2 is not int32", None) == "column col2 is not int32"


def test_every_kind_of_error_is_shown_biggest_first_or_counted() -> None:
    kinds = {f"error kind {chr(65 + i)}": [f"{i:05d}"] * (i + 1) for i in range(12)}
    by_size = dict(sorted(kinds.items(), key=lambda kv: -len(kv[1])))
    failures = [{"zip": z, "partition": z, "error": e, "attempts": 1}
                for e, zips in kinds.items() for z in zips]  # fmt: skip
    text = format_status(make_status(failures=failures, failures_by_error=by_size))

    shown = [line for line in text.splitlines() if line.startswith("  [")]
    assert shown[0] == "  [12] error kind L" and len(shown) == 10
    assert "and 2 more kinds (3 partitions)" in text


def test_errors_naming_a_split_of_the_zip_group_with_the_other_splits() -> None:
    a = _error_kind("transform x failed on partition 10016[0,500): ValueError", "10016", 0, 500)
    b = _error_kind("transform x failed on partition 10016[500,): ValueError", "10016", 500)

    assert a == b == "transform x failed on partition <zip>: ValueError"


def test_the_summary_names_failures_and_how_to_retry_them() -> None:
    text = format_status(make_status())

    assert "3/3 partitions (100.0%)" in text
    assert "complete" in text
    assert "[1] boom" in text and "zips: 00003" in text
    assert "etl-enqueue --resume r1" in text


def test_a_run_in_progress_shows_percent_throughput_eta_and_memory() -> None:
    status = make_status(
        total=1000,
        states=states(queued=700, started=2, retrying=1, finished=290, failed=7),
        rows_per_second=8167.4,
        zips_per_minute=2455.0,
        elapsed_seconds=7.3,
        eta_seconds=3725.0,
        **NO_FAILURES,
    )

    text = format_status(status)

    assert "297/1,000 partitions (29.7%)  ETA 1h02m05s" in text
    assert "queued 700  started 2  retrying 1  finished 290  failed 7" in text
    assert "8,167 rows/s  2,455 zips/min" in text
    assert "peak RSS 100.0 MiB" in text
    assert "frames 2.0 KiB -> 1000 B after downcasting" in text
    assert "failures" not in text


def test_frames_not_downcast_are_not_said_to_be() -> None:
    status = make_status(memory_before_bytes=2048, memory_after_bytes=2048)
    text = format_status(status)
    assert "frames 2.0 KiB" in text and "downcasting" not in text


def test_many_zips_failing_the_same_way_are_one_line_with_a_count() -> None:
    zips = [f"{i:05d}" for i in range(12)]
    status = make_status(
        failures=[{"zip": z, "partition": z, "error": "boom", "attempts": 1} for z in zips],
        failures_by_error={"ValueError: bad revenue for zip <zip>": zips},
    )

    text = format_status(status)

    assert "[12] ValueError: bad revenue for zip <zip>" in text
    assert "zips: 00000, 00001, 00002, 00003, 00004, 00005, 00006, 00007 and 4 more" in text


def test_a_dry_run_says_nothing_was_written() -> None:
    assert "(dry run: nothing written)" in format_status(make_status(mode="dry_run"))
