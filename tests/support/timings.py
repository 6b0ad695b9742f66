"""Timings short enough for a fault test, in the order `Settings` requires (see
docs/reliability.md): Redis redelivers a fetched message 2 s after the task time limit,
retries back off 2 s at most, and the workers sweep every second."""

from __future__ import annotations


def short_timings(*, lease: float, task_limit: int, **more: str) -> dict[str, str]:
    """ETL_* variables for workers and producers: `lease` (ETL_LEASE_SECONDS) and
    `task_limit` (ETL_TASK_TIME_LIMIT), plus `more` (e.g. ETL_WRITE_TIMEOUT="3")."""
    return {
        "ETL_LEASE_SECONDS": f"{lease:g}",
        "ETL_TASK_TIME_LIMIT": str(task_limit),
        "ETL_VISIBILITY_TIMEOUT": str(task_limit + 2),
        "ETL_RETRY_BACKOFF_MAX": "2",
        "ETL_SWEEP_INTERVAL": "1",
    } | more


#: A lease of 3 s (renewed every 0.75 s), a task limit of 8 s, sweeps every second: a dead
#: or unrenewed attempt's partition is sent again 3-4.5 s on, long before the limit.
#: (Shorter leases flake on a loaded machine: a commit can stall for a second.)
LEASE_3S = short_timings(lease=3, task_limit=8)
