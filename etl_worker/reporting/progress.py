"""Live progress bars (rich) on stderr, so stdout keeps only results.

`wait_for_run` follows a run's partitions in the audit table (`wait_and_sweep` sweeps the run
meanwhile); `row_progress` counts the rows of a long load (etl-seed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
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

from etl_worker.audit import TERMINAL, State
from etl_worker.config import Settings
from etl_worker.producer import run_queue
from etl_worker.reconnect import PatientAudit
from etl_worker.reporting.stalls import StallWatch
from etl_worker.reporting.status import RunStatus, run_status
from etl_worker.sweeper import PeriodicSweep, log_sweep
from etl_worker.units import format_duration

#: Without a terminal (CI logs, a pipe), a plain progress line this often.
LINE_SECONDS = 5.0


def wait_for_run(
    settings: Settings,
    run_id: str,
    *,
    poll_seconds: float = 1.0,
    timeout: float | None = None,
    show: bool = True,
    on_poll: Callable[[], object] | None = None,
) -> RunStatus:
    """Poll the audit table until every partition of the run is done: finished, failed,
    superseded or cancelled (a run of no partitions is complete at once).

    `on_poll` runs between polls (the sweeper hooks in there, so a waiting producer also
    recovers partitions of dead workers). A database outage is waited out with a notice
    (reconnect.py). With `show`, a run that makes no progress is explained by what its
    workers say (stalls.py), and without a terminal a plain progress line is printed every
    LINE_SECONDS. Raises TimeoutError after `timeout` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    console = Console(stderr=True)
    terminal = console.is_terminal
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows, {task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        # Not a terminal (CI, a pipe): rich would draw the bar once, at the end; plain lines
        # every LINE_SECONDS instead (`_line`).
        disable=not (show and terminal),
        transient=False,
    )

    def notice(line: str) -> None:
        if show:
            stamp = datetime.now().strftime("%H:%M:%S")
            progress.console.print(f"{stamp} {line}", markup=False, highlight=False, soft_wrap=True)

    with PatientAudit(settings, notice) as audit, progress:
        queue = run_queue(audit.run(lambda a: a.get_run(run_id)), settings)
        stalls = StallWatch(settings, queue, notice) if show else None
        bar = progress.add_task("partitions", total=None, rows=0, failed=0)
        started = time.monotonic()
        next_line, done_before = started, None
        while True:
            counts = audit.run(lambda a: a.counts(run_id))
            total = sum(c[0] for c in counts.values())
            done = sum(counts.get(s, (0, 0, 0))[0] for s in TERMINAL)
            failed = counts.get(State.FAILED, (0, 0, 0))[0]
            rows = sum(c[2] for c in counts.values())
            progress.update(bar, total=total, completed=done, rows=rows, failed=failed)
            ended = done >= total
            done_before = done if done_before is None else done_before
            if show and not terminal and (ended or time.monotonic() >= next_line):
                next_line = time.monotonic() + LINE_SECONDS
                elapsed = time.monotonic() - started
                notice(_line(done, total, rows, failed, elapsed, done - done_before))
            if ended:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id}: {done}/{total} partitions done after {timeout}s")
            if stalls is not None:
                stalls(done)
            if on_poll is not None:
                on_poll()
            time.sleep(poll_seconds)
        return audit.run(lambda a: run_status(a, run_id))


def _line(done: int, total: int, rows: int, failed: int, elapsed: float, lately: int) -> str:
    """One progress line for a log: 'partitions 3/8 (37.5%), 1,234 rows, 0 failed, ...'
    (`lately`: partitions done while this command waited, what the ETA goes by)."""
    percent = 100.0 * done / total if total else 100.0
    eta = elapsed / lately * (total - done) if lately and done < total else None
    return (
        f"partitions {done:,}/{total:,} ({percent:.1f}%), {rows:,} rows, {failed:,} failed, "
        f"elapsed {format_duration(elapsed)}, ETA {format_duration(eta)}"
    )


def wait_and_sweep(settings: Settings, run_id: str, **options: Any) -> RunStatus:
    """Wait for a run with a progress bar, sweeping it meanwhile: a dead worker's partitions
    of this run come back within ETL_LEASE_SECONDS + ETL_SWEEP_INTERVAL with no other
    process running. What `etl-enqueue --wait`, `etl-status --wait` and `etl-demo` do."""
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
