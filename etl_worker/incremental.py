"""Incremental runs: `etl-enqueue --all-zips --changed-since RUN_ID` enqueues only the
partitions that would be written differently from their last finished run.

Every partition of the raw table is fingerprinted in one pass (fingerprints.py); each is
compared with its last finished run among the runs of this raw table and partition column
created up to RUN_ID (so a chain of incremental runs keeps comparing with the run that
actually wrote each partition). A partition is enqueued when it is new, or when its target
table, its code fingerprint or its raw fingerprint differ; otherwise it is skipped.

A partition whose last run read rows but that has none now (all its rows deleted, or moved
to another key) vanished: with `remove_vanished` it is enqueued too, and its task, reading no
rows, deletes its rows from the target in its write transaction (and records an empty
fingerprint, so the next run counts it gone, not vanished). Without it, it is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from etl_worker.audit import Audit
from etl_worker.db import Column, TableName
from etl_worker.fingerprints import RawFingerprint, all_fingerprints

#: Why a partition is enqueued, first matching reason first.
NEW = "new"
TARGET_CHANGED = "target_changed"
CODE_CHANGED = "transform_changed"
RAW_CHANGED = "raw_changed"
#: The run compared with took no raw fingerprints (ETL_RAW_FINGERPRINTS off): nothing
#: says the rows are unchanged, so the partition runs again.
NOT_FINGERPRINTED = "not_fingerprinted"
VANISHED = "vanished"
#: Why one is skipped.
UNCHANGED = "unchanged"
VANISHED_KEPT = "vanished_target_rows_kept"


@dataclass
class Selection:
    """What an incremental run enqueues and skips, and why."""

    since: str
    keys: list[str | None] = field(default_factory=list)
    enqueued: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    fingerprint_seconds: float = 0.0
    partitions_fingerprinted: int = 0
    #: Every partition's raw fingerprint now (a vanished one's is empty), to record.
    current: dict[str | None, RawFingerprint] = field(default_factory=dict)

    def add(self, key: str | None, reason: str) -> None:
        self.keys.append(key)
        self.enqueued[reason] = self.enqueued.get(reason, 0) + 1

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "enqueued": dict(sorted(self.enqueued.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_total": sum(self.skipped.values()),
            "partitions_fingerprinted": self.partitions_fingerprinted,
            "fingerprint_seconds": round(self.fingerprint_seconds, 3),
        }


@dataclass(frozen=True)
class Baseline:
    run_id: str
    target_table: str
    fingerprint: RawFingerprint | None
    code: str | None


def baselines(audit: Audit, since: str, raw_table: str, column: str) -> dict[str | None, Baseline]:
    """Each partition key's last finished run up to `since`."""
    found = {}
    for key, run_id, target, fingerprinted, rows, hashed, code, codes in audit.last_finished(
        since, raw_table, column
    ):
        fingerprint = RawFingerprint(int(rows), Decimal(hashed)) if fingerprinted else None
        # Tasks of one partition written by different code: no single code to compare.
        found[key] = Baseline(run_id, target, fingerprint, code if codes == 1 else None)
    return found


def select(
    conn: psycopg.Connection,
    audit: Audit,
    *,
    since: str,
    raw_table: str,
    raw: TableName,
    column: Column,
    target_table: str,
    code: str,
    remove_vanished: bool,
) -> Selection:
    """The partitions to enqueue (in `keys`) and the counts of each reason."""
    audit.get_run(since)  # RunNotFound, with its message, for an unknown run id
    selection = Selection(since)
    started = time.perf_counter()
    current = all_fingerprints(conn, raw, column)
    selection.fingerprint_seconds = time.perf_counter() - started
    selection.partitions_fingerprinted = len(current)
    selection.current = dict(current)
    last = baselines(audit, since, raw_table, column.name)
    for key, fingerprint in current.items():
        base = last.get(key)
        if base is None:
            selection.add(key, NEW)
        elif base.target_table != target_table:
            selection.add(key, TARGET_CHANGED)
        elif base.code != code:
            selection.add(key, CODE_CHANGED)
        elif base.fingerprint is None:
            selection.add(key, NOT_FINGERPRINTED)
        elif base.fingerprint != fingerprint:
            selection.add(key, RAW_CHANGED)
        else:
            selection.skip(UNCHANGED)
    for key, base in last.items():
        if key in current or (base.fingerprint is not None and base.fingerprint.rows == 0):
            continue  # still there, or already emptied by an earlier run
        if remove_vanished and base.target_table == target_table:
            selection.add(key, VANISHED)
            selection.current[key] = RawFingerprint(0, Decimal(0))
        else:
            selection.skip(VANISHED_KEPT)
    return selection


def describe(selection: dict[str, Any]) -> str:
    """One line for the enqueue summary and etl-status: what was skipped and why."""
    enqueued = ", ".join(f"{n:,} {why}" for why, n in selection["enqueued"].items()) or "none"
    skipped = ", ".join(f"{n:,} {why}" for why, n in selection["skipped"].items()) or "none"
    return (
        f"changed since {selection['since']}: enqueued {enqueued}; skipped {skipped} "
        f"({selection['partitions_fingerprinted']:,} partitions fingerprinted in "
        f"{selection['fingerprint_seconds']:.2f}s)"
    )
