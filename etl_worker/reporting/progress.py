"""Live progress bars (rich) on stderr, so stdout keeps only results.

`wait_for_run` follows a run's partitions in the audit table (`wait_and_sweep` sweeps the run
meanwhile); `row_progress` counts the rows of a long load (etl-seed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from etl_worker.audit import Audit, State
from etl_worker.config import Settings
from etl_worker.db import connect
from etl_worker.reporting.status import RunStatus, run_status
from etl_worker.sweeper import PeriodicSweep, log_sweep


def wait_for_run(
    settings: Settings,
    run_id: str,
    *,
    poll_seconds: float = 1.0,
    timeout: float | None = None,
    show: bool = True,
    on_poll: Callable[[], object] | None = None,
) -> RunStatus:
    """Poll the audit table until every partition of the run is finished or failed.

    `on_poll` runs between polls (the sweeper hooks in there, so a waiting producer also
    recovers partitions of dead workers). Raises TimeoutError after `timeout` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    console = Console(stderr=True)
    with connect(settings.database_url) as conn:
        audit = Audit(conn, settings.audit_schema)
        # RunNotFound for an unknown run. A run and its partitions are recorded in one
        # transaction, so a run with none (an incremental run with nothing changed) is done.
        audit.get_run(run_id)
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]:,} rows, {task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            # Not a terminal (CI, a pipe): still draw one readable line, not a squeezed one.
            console=console if console.is_terminal else Console(stderr=True, width=120),
            disable=not show,
            transient=False,
        )
        with progress:
            bar = progress.add_task("partitions", total=None, rows=0, failed=0)
            while True:
                counts = audit.counts(run_id)
                total = sum(c[0] for c in counts.values())
                finished = counts.get(State.FINISHED, (0, 0, 0))[0]
                failed = counts.get(State.FAILED, (0, 0, 0))[0]
                rows = sum(c[2] for c in counts.values())
                progress.update(
                    bar, total=total, completed=finished + failed, rows=rows, failed=failed
                )
                if finished + failed >= total:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"run {run_id}: {finished + failed}/{total} partitions done after "
                        f"{timeout}s"
                    )
                if on_poll is not None:
                    on_poll()
                time.sleep(poll_seconds)
        return run_status(audit, run_id)


def wait_and_sweep(settings: Settings, run_id: str, **options: Any) -> RunStatus:
    """Wait for a run with a progress bar, sweeping it meanwhile: a dead worker's partitions
    of this run come back within ETL_LEASE_SECONDS + ETL_SWEEP_INTERVAL with no other
    process running. What `etl-enqueue --wait` and `etl-demo` do."""
    sweep_run = PeriodicSweep(settings, run_id, report=log_sweep)
    return wait_for_run(settings, run_id, on_poll=sweep_run, **options)


@contextmanager
def row_progress(total: int, description: str, *, show: bool) -> Iterator[Callable[[int], None]]:
    """Yield `advance(rows)`: a bar counting to `total` rows when `show`, else a no-op."""
    if not show:
        yield lambda _rows: None
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,  # the command prints its own summary line when done
    )
    with progress:
        bar = progress.add_task(description, total=total)
        yield lambda rows: progress.advance(bar, rows)
