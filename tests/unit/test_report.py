"""The report's arithmetic and HTML, on partitions made up in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from etl_worker.reporting.charts import bucket_seconds, throughput_series
from etl_worker.reporting.report import render_html
from tests.support.status import NO_FAILURES, make_status, states

START = datetime(2026, 1, 1, tzinfo=UTC)


def partition(state: str, finished_after: float | None, rows: int | None, **more: Any) -> dict:  # type: ignore[type-arg]
    return {
        "part_key": "10016",
        "state": state,
        "started_at": START,
        "finished_at": None
        if finished_after is None
        else START + timedelta(seconds=finished_after),
        "rows_read": rows,
        "duration_seconds": finished_after,
        "memory_before_bytes": rows and rows * 100,
        "memory_after_bytes": rows and rows * 50,
        "peak_rss_bytes": rows and 100 * 2**20,
        **more,
    }


@pytest.mark.parametrize(
    ("span", "width"), [(0, 1), (30, 1), (100, 5), (3600, 120), (40 * 86400, 86400)]
)
def test_throughput_buckets_are_round_and_about_forty_per_run(span: float, width: int) -> None:
    assert bucket_seconds(span) == width


def test_throughput_counts_rows_and_zips_finished_in_each_bucket() -> None:
    parts = pd.DataFrame(
        [
            partition("finished", 0.5, 10),
            partition("finished", 1.5, 20),
            partition("finished", 1.7, 30),
            partition("failed", 1.8, 99),  # failed rows are not throughput
            partition("queued", None, None),
        ]
    )

    series = throughput_series(parts)

    assert series["seconds"].tolist() == [0.0, 1.0]
    assert series["rows_per_second"].tolist() == [10.0, 50.0]
    assert series["zips_per_minute"].tolist() == [60.0, 120.0]


def test_a_run_with_nothing_finished_still_renders_every_chart() -> None:
    parts = pd.DataFrame([partition("queued", None, None), partition("started", None, None)])
    status = make_status(
        total=2,
        states=states(queued=1, started=1),
        **NO_FAILURES,
    )

    page = render_html(status, parts)

    assert page.count("data:image/png;base64,") == 4
    assert "in progress" in page
    assert "<h2>Failures</h2>\n<p>None.</p>" in page


def test_errors_and_names_are_escaped_in_the_html() -> None:
    error = "ValueError: <script>alert('x')</script> & more"
    status = make_status(
        failures=[{"zip": "00003", "partition": "00003", "error": error, "attempts": 2}],
        failures_by_error={error: ["00003"]},
    )

    page = render_html(status, pd.DataFrame([partition("failed", 1.0, 5, error=error)]))

    assert "<script>" not in page
    assert "ValueError: &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert '<span class="bad">1 failed</span>' in page
