"""snapshot: the statements that put a partition's read in the run's exported snapshot."""

from __future__ import annotations

import pytest

from etl_worker.errors import SnapshotGone
from etl_worker.snapshot import snapshot_statements


def test_a_run_without_a_snapshot_reads_without_preamble_and_a_malformed_id_is_refused() -> None:
    def bind(statement: object, params: dict[str, object]) -> str:
        return f"{statement!r} {params!r}"

    assert snapshot_statements(bind, None) == []
    first, second = snapshot_statements(bind, "00000003-00000002-1")
    assert first == "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
    assert "00000003-00000002-1" in second
    with pytest.raises(SnapshotGone):
        snapshot_statements(bind, "1'; DROP TABLE x; --")
