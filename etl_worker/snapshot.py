"""One consistent read of the raw table for a whole run (`etl-enqueue --snapshot --wait`).

Without it, each partition reads the raw table in its own transaction, when it runs: a row
whose partition value changes between two partitions' reads is written twice or not at all
(docs/reliability.md, "Consistency"). With it, the producer opens a REPEATABLE READ
transaction, exports its snapshot (`pg_export_snapshot`), records the snapshot id on the
run and keeps the transaction open while it waits for the run; every partition's read
imports that snapshot (`SET TRANSACTION SNAPSHOT`) in a REPEATABLE READ, READ ONLY
transaction of its own, so the run reads the table exactly as it was when it was planned.

The snapshot lives only as long as the producer's transaction: when the producer dies, a
partition that has not read yet fails with `SnapshotGone`, whose message says to resume the
run without the snapshot (--resume forgets it: audit.resume_run_guards).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from etl_worker.db import Column, connect, first_line
from etl_worker.errors import SnapshotGone
from etl_worker.extract import fence_token, read_arrow

#: Postgres's "invalid snapshot identifier" (the exporting transaction ended) is 22023.
_INVALID_PARAMETER_VALUE = "22023"
_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$")


class ExportedSnapshot:
    """The producer's open REPEATABLE READ transaction and the id of its exported snapshot.
    Plan the run on `conn` (so the partitions listed are the snapshot's); close it when the
    run is over: nothing can read the snapshot after that."""

    def __init__(self, database_url: str, *, network_timeout: float) -> None:
        self.conn = connect(database_url, autocommit=False, network_timeout=network_timeout)
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self.conn.read_only = True
        row = self.conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        self.id = str(row[0])

    def close(self) -> None:
        try:
            self.conn.rollback()
        finally:
            self.conn.close()

    def __enter__(self) -> ExportedSnapshot:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def snapshot_statements(
    bind: Callable[[sql.Composed | sql.SQL, dict[str, Any]], str], snapshot_id: str | None
) -> list[str]:
    """The statements that open a read transaction in `snapshot_id` (none without one)."""
    if snapshot_id is None:
        return []
    if not _SNAPSHOT_ID.match(snapshot_id):
        raise SnapshotGone(f"the run's snapshot id {snapshot_id!r} is not a snapshot id")
    return [
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        bind(sql.SQL("SET TRANSACTION SNAPSHOT %(id)s"), {"id": snapshot_id}),
    ]


def read_in_snapshot(
    adbc_conn: Any,
    query_text: str,
    columns: list[Column],
    *,
    snapshot: Sequence[str],
    run_id: str,
    ceiling_bytes: int = 0,
    label: str = "",
) -> tuple[pa.Table, int]:
    """`extract.read_arrow`, in the run's snapshot when `snapshot` has its statements, with
    the read's fence token (`extract.fence_token`); a snapshot that is gone is a
    `SnapshotGone` that says how to go on."""
    try:
        token = fence_token(adbc_conn, snapshot)
        table = read_arrow(adbc_conn, query_text, columns, ceiling_bytes=ceiling_bytes, label=label)
        return table, token
    except Exception as exc:
        if snapshot and getattr(exc, "sqlstate", None) == _INVALID_PARAMETER_VALUE:
            raise SnapshotGone(
                f"partition {label}: the run's snapshot is gone ({first_line(exc)}): the "
                "etl-enqueue --snapshot --wait that held it has ended — resume the run "
                f"without a snapshot: etl-enqueue --resume {run_id}"
            ) from exc
        raise
