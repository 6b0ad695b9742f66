"""One run at a time per target table, and cancelling a run.

Two runs writing one table at once are where copies double: partitioned by different
columns, no lock or fence of one partition value sees the other run's rows (and one run's
late reads would be written over another's newer ones). So a run starts (or resumes) only
when no other run on the same table, by its oid (`clean_companies` and
`public.clean_companies` are one table), has partitions queued, started or retrying. The
check and the run's insert happen under one transaction-level advisory lock on the
target, so two enqueues at once cannot both pass it. The way out of a refusal is to wait
for the other run, or to cancel it (`cancel_run`, behind `etl-enqueue --cancel`).

Dry runs write nothing: they are neither refused nor in the way.
"""

from __future__ import annotations

import psycopg

from etl_worker.db import TableName
from etl_worker.errors import RunInProgress
from etl_worker.queries import query


def target_oid(conn: psycopg.Connection, table: TableName) -> int | None:
    """The table's oid as this connection resolves its name (None: no such table)."""
    row = conn.execute("SELECT to_regclass(%s)::oid", (table.ident.as_string(conn),)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def run_target_oid(conn: psycopg.Connection, schema: str, run_id: str) -> int | None:
    """The oid recorded for the run's target at enqueue (None: a dry run)."""
    row = conn.execute(query("run_target_oid", schema), {"run_id": run_id}).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def refuse_if_target_busy(conn: psycopg.Connection, schema: str, oid: int, run_id: str) -> None:
    """Inside the transaction that records (or requeues) `run_id`: take the target's turn
    and raise `RunInProgress` when another run on it is unfinished."""
    conn.execute(query("lock_target_runs", schema), {"target_oid": oid})
    row = conn.execute(
        query("unfinished_run_on_target", schema), {"target_oid": oid, "run_id": run_id}
    ).fetchone()
    if row is None:
        return
    other, target, unfinished = str(row[0]), str(row[1]), int(row[2])
    raise RunInProgress(
        f'run {other} is still writing "{target}" ({unfinished:,} partition(s) queued, '
        f"started or retrying): wait for it (etl-status {other} --wait) or cancel it "
        f"(etl-enqueue --cancel {other}), then enqueue again"
    )


def cancel_run(conn: psycopg.Connection, schema: str, run_id: str) -> int:
    """Cancel the run's queued, started and retrying partitions; returns how many. Workers
    skip them (the claim refuses a cancelled partition; a write already under way re-checks
    the state under its lock and writes nothing, one that already holds the lock finishes
    first and the cancel then leaves it finished). `--resume` sends them again."""
    rows = conn.execute(query("cancel_run", schema), {"run_id": run_id}).fetchall()
    return len(rows)
