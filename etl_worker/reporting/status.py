"""A run's progress and outcome, computed from the audit table alone."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from etl_worker.audit import TERMINAL, Audit, RunMode, State
from etl_worker.partition import partition_label
from etl_worker.reporting import contract_status
from etl_worker.units import format_bytes, format_duration


@dataclass
class RunStatus:
    run_id: str
    raw_table: str
    target_table: str
    transform: str
    mode: str
    total: int
    states: dict[str, int]
    rows_read: int
    rows_written: int
    elapsed_seconds: float
    rows_per_second: float
    zips_per_minute: float
    eta_seconds: float | None
    peak_rss_bytes: int | None
    memory_before_bytes: int
    memory_after_bytes: int
    largest_frame_bytes: int | None
    failures: list[dict[str, Any]] = field(default_factory=list)
    failures_by_error: dict[str, list[str]] = field(default_factory=dict)
    slowest: list[dict[str, Any]] = field(default_factory=list)
    #: Workers refusing the run's partitions: other transform code loaded, or not allowed.
    refusals: list[dict[str, Any]] = field(default_factory=list)
    transform_fingerprint: str | None = None
    snapshot_id: str | None = None
    #: Contract failures grouped by check (contract_status.by_check).
    contract_failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: An incremental run's selection: what it enqueued, and what it skipped and why (the
    #: skipped partitions are not in `total`).
    incremental: dict[str, Any] | None = None
    #: Superseding run id -> labels of the partitions whose older read it replaced.
    superseded_by: dict[str, list[str]] = field(default_factory=dict)
    #: Messages refused: their partition was not their audit row's (nothing written).
    refused_messages: int = 0

    @property
    def done(self) -> int:
        """Partitions the run is over for: finished, failed, superseded or cancelled."""
        return sum(self.states.get(s, 0) for s in TERMINAL)

    @property
    def complete(self) -> bool:
        return self.done == self.total

    @property
    def failed(self) -> int:
        return self.states.get(State.FAILED, 0)

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(done=self.done, percent=round(self.percent, 2), complete=self.complete)
        return data


#: Gaps with no partition at work longer than this are idle time, not elapsed time (the
#: moments between one task and the next on a busy fleet are far shorter).
IDLE_GAP_SECONDS = 10.0


def run_status(audit: Audit, run_id: str, *, details: bool = True) -> RunStatus:
    spec = audit.get_run(run_id)
    counts = audit.counts(run_id)
    states = {s.value: counts.get(s.value, (0, 0, 0))[0] for s in State}
    total = sum(states.values())
    rows_read = sum(c[1] for c in counts.values())
    rows_written = sum(c[2] for c in counts.values())
    _, _, _, _, peak, mem_before, mem_after, largest = audit.timing(run_id)
    done = sum(states[s] for s in TERMINAL)
    # Working time, not first start to last finish: a --resume hours later must not
    # count the hours it waited in elapsed, nor divide the throughput by them.
    elapsed = audit.working_seconds(run_id, IDLE_GAP_SECONDS)
    # Throughput counts the rows of finished partitions as read, not as written, so that a
    # dry run (which writes nothing) still measures the read + transform speed.
    rows_done = counts.get(State.FINISHED, (0, 0, 0))[1]
    rate = rows_done / elapsed if elapsed else 0.0
    zips_per_minute = 60.0 * done / elapsed if elapsed else 0.0
    remaining = total - done
    eta = remaining / (zips_per_minute / 60.0) if zips_per_minute and remaining else None
    status = RunStatus(
        run_id=run_id,
        raw_table=spec.raw_table,
        target_table=spec.target_table,
        transform=spec.transform,
        mode=str(spec.mode),
        total=total,
        states=states,
        rows_read=rows_read,
        rows_written=rows_written,
        elapsed_seconds=round(elapsed, 3),
        rows_per_second=round(rate, 1),
        zips_per_minute=round(zips_per_minute, 1),
        eta_seconds=None if eta is None else round(eta, 1),
        peak_rss_bytes=peak,
        memory_before_bytes=int(mem_before),
        memory_after_bytes=int(mem_after),
        largest_frame_bytes=largest,
        transform_fingerprint=spec.transform_fingerprint,
        snapshot_id=spec.snapshot_id,
        incremental=audit.incremental(run_id),
    )
    status.refusals = [
        {"worker": w, "loaded": loaded, "wanted": wanted, "reason": reason, "at": str(at)}
        for w, loaded, wanted, reason, at in audit.refusals(run_id)
    ]
    if details:
        grouped: dict[str, list[str]] = defaultdict(list)
        for key, lo, hi, error, attempts, trace in audit.failures(run_id):
            label = partition_label(key, lo, hi)
            status.failures.append(
                {
                    "zip": key,
                    "partition": label,
                    "error": error,
                    "attempts": attempts,
                    "traceback": trace,
                }
            )
            grouped[_error_kind(error or "", key, lo, hi)].append(label)
        # Biggest group first: the kind of error most partitions hit is the one to fix.
        status.failures_by_error = dict(sorted(grouped.items(), key=lambda kv: -len(kv[1])))
        status.superseded_by = {
            run: [partition_label(*part) for part in parts]
            for run, parts in audit.superseded(run_id).items()
        }
        status.refused_messages = audit.refused_messages(run_id)
        status.slowest = [
            {
                "zip": key,
                "partition": partition_label(key, lo, hi),
                "seconds": round(d or 0, 3),
                "rows": rows,
                "worker": worker,
            }
            for key, lo, hi, d, rows, worker in audit.slowest(run_id)
        ]
        status.contract_failures = contract_status.by_check(audit, run_id)
    return status


def _error_kind(
    error: str, key: str | None = None, lo: int | None = None, hi: int | None = None
) -> str:
    """Group errors that differ only by the partition they name: in our own wording
    ("partition 10016[0,5000)", "(1,234 rows)") or anywhere in the user's message ("for
    zip 10016")."""
    own = re.escape(f"partition {partition_label(key, lo, hi)}") + r"(?![\w.-])"
    text = re.sub(own, "partition <zip>", error)
    # Other labels naming a partition: NULL, quoted values, and errors recorded by earlier
    # versions, which quoted every value ('10016'[0, 5000)).
    text = re.sub(r"partition (NULL|'[^']*')(\[[^)]*\))?", "partition <zip>", text)
    text = re.sub(r"\(\d[\d,]* rows\)", "(<n> rows)", text)
    if key:
        text = re.sub(rf"(?<![\w-]){re.escape(key)}(?![\w-])", "<zip>", text)
    # The values in a message are not its kind: `Float value 3.5` and `5.5` are one error.
    text = _QUOTED.sub("'<v>'", text)
    return _NUMBER.sub("<n>", text)


#: A single-quoted value in an error message ('abc', 'it''s').
_QUOTED = re.compile(r"'(?:[^']|'')*'")
#: A number standing alone (not part of a word such as int64 or a name like col2).
_NUMBER = re.compile(r"(?<![\w.<])[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w>])")


_MODE_NOTES: dict[str, str] = {
    RunMode.DRY_RUN: "  (dry run: nothing written)",
    RunMode.TEST: "  (test run: a sample into a test target)",
}


def format_status(status: RunStatus, *, max_failures: int = 10) -> str:
    """The human summary `etl-status` prints."""
    s = status
    lines = [
        f"run {s.run_id}  {s.raw_table} -> {s.target_table}  transform {s.transform}"
        + _MODE_NOTES.get(s.mode, ""),
        f"progress   {s.done:,}/{s.total:,} partitions ({s.percent:.1f}%)"
        + ("  complete" if s.complete else f"  ETA {format_duration(s.eta_seconds)}"),
        "states     " + "  ".join(f"{k} {v:,}" for k, v in s.states.items()),
        f"rows       read {s.rows_read:,}  written {s.rows_written:,}",
        f"throughput {s.rows_per_second:,.0f} rows/s  {s.zips_per_minute:,.0f} zips/min  "
        f"elapsed {format_duration(s.elapsed_seconds)}",
        f"memory     peak RSS {format_bytes(s.peak_rss_bytes)}  largest frame "
        f"{format_bytes(s.largest_frame_bytes)}  frames {format_bytes(s.memory_before_bytes)}"
        # Workers no longer downcast (frames.py): said only for runs whose workers did.
        + (
            f" -> {format_bytes(s.memory_after_bytes)} after downcasting"
            if s.memory_after_bytes != s.memory_before_bytes
            else ""
        ),
    ]
    lines.extend(contract_status.format_skipped_line(s.incremental))
    if s.slowest:
        lines.append(
            "slowest    "
            + "  ".join(
                f"{x['partition']} {x['seconds']:.2f}s/{x['rows'] or 0:,} rows" for x in s.slowest
            )
        )
    if s.refusals:
        # A loaded fingerprint: the worker runs other code (an older transform, most
        # often: not restarted since the fix); none: it may not or cannot import it.
        other = sum(1 for r in s.refusals if r["loaded"] is not None)
        lines.append(
            f"refused    {len(s.refusals)} worker(s) refuse this run's partitions"
            + (
                f"; {other} run another version of the transform than the run's "
                f"{s.transform_fingerprint}"
                if other
                else ""
            )
            + ": "
            + s.refusals[-1]["reason"]
        )
    for run, labels in s.superseded_by.items():
        shown = ", ".join(labels[:8]) + (f" and {len(labels) - 8} more" if len(labels) > 8 else "")
        lines.append(
            f"superseded {len(labels):,} partition(s) by run {run}, which wrote a newer read "
            f"of them first: {shown}"
        )
    cancelled = s.states.get(State.CANCELLED, 0)
    if cancelled:
        lines.append(
            f"cancelled  {cancelled:,} partition(s); send them again with: etl-enqueue "
            f"--resume {s.run_id}"
        )
    if s.refused_messages:
        lines.append(
            f"mismatch   {s.refused_messages:,} message(s) named another partition than their "
            "audit row: refused, nothing written (see the workers' logs)"
        )
    if s.failures:
        kinds = list(s.failures_by_error.items())
        lines.append(
            f"failures   {len(s.failures):,} partition(s) failed, {len(kinds):,} kind(s) of error:"
        )
        for error, zips in kinds[:max_failures]:
            shown = ", ".join(zips[:8]) + (f" and {len(zips) - 8} more" if len(zips) > 8 else "")
            lines.append(f"  [{len(zips)}] {error}")
            lines.append(f"       zips: {shown}")
        if len(kinds) > max_failures:
            rest = sum(len(zips) for _, zips in kinds[max_failures:])
            lines.append(
                f"  and {len(kinds) - max_failures:,} more kinds ({rest:,} partitions): "
                f"etl-status {s.run_id} --json or etl-report {s.run_id} lists them all"
            )
        lines.append(f"  retry them with: etl-enqueue --resume {s.run_id}")
    lines.extend(contract_status.format_contract_lines(s.contract_failures))
    return "\n".join(lines)


@dataclass
class RunSummary:
    """One line of `etl-status --list`."""

    run_id: str
    raw_table: str
    target_table: str
    transform: str
    mode: str
    state: str
    total: int
    finished: int
    failed: int
    rows_written: int
    started: datetime
    elapsed_seconds: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def run_state(total: int, finished: int, failed: int, started: int) -> str:
    """A run's state in a word: complete, failed (complete with failures), running, waiting
    (nothing started yet, or nothing running now: no worker, or a --resume to come)."""
    if total and finished + failed == total:
        return "failed" if failed else "complete"
    return "running" if started else "waiting"


def list_runs(audit: Audit, limit: int = 20) -> list[RunSummary]:
    """The latest `limit` runs, newest first."""
    runs = []
    for (
        run_id,
        raw,
        target,
        transform,
        mode,
        created,
        total,
        done,
        failed,
        started,
        rows,
    ) in audit.recent_runs(limit):
        runs.append(
            RunSummary(
                run_id=run_id,
                raw_table=raw,
                target_table=target,
                transform=transform,
                mode=mode,
                state=run_state(total, done, failed, started),
                total=total,
                finished=done,
                failed=failed,
                rows_written=int(rows),
                started=created,
                elapsed_seconds=round(audit.working_seconds(run_id, IDLE_GAP_SECONDS), 3),
            )
        )
    return runs


def format_run_list(runs: list[RunSummary]) -> str:
    """`etl-status --list`: one line per run, newest first."""
    if not runs:
        return "no runs in the audit table yet — start one with etl-enqueue"
    header = ("run", "tables", "transform", "state", "done/total", "failed", "started", "elapsed")
    rows = [
        (
            r.run_id,
            f"{r.raw_table} -> {r.target_table}" + (f" ({r.mode})" if r.mode != "normal" else ""),
            r.transform,
            r.state,
            f"{r.finished + r.failed:,}/{r.total:,}",
            f"{r.failed:,}",
            r.started.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            format_duration(r.elapsed_seconds),
        )
        for r in runs
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
