"""Run summaries made up in memory, for the tests of what prints and renders them."""

from __future__ import annotations

from typing import Any

from etl_worker.audit import State
from etl_worker.reporting.status import RunStatus

#: Overrides for a run with no failed partition.
NO_FAILURES: dict[str, Any] = {"failures": [], "failures_by_error": {}}


def states(**counts: int) -> dict[str, int]:
    """Partition counts per state, zero for every state not given."""
    return {state.value: counts.get(state.value, 0) for state in State}


def make_status(**overrides: Any) -> RunStatus:
    """A finished three-partition run with one failure, changed by `overrides`."""
    values: dict[str, Any] = dict(
        run_id="r1",
        raw_table="raw",
        target_table="clean",
        transform="m:f",
        mode="normal",
        total=3,
        states=states(finished=2, failed=1),
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
    values.update(overrides)
    return RunStatus(**values)
