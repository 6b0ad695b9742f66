"""A run's contract failures grouped by check, and an incremental run's skipped partitions,
for etl-status and etl-report."""

from __future__ import annotations

from typing import Any

from etl_worker.audit import Audit
from etl_worker.partition import partition_label

#: Offending rows shown per check in etl-status (the audit row keeps up to
#: ETL_CONTRACT_SAMPLE_ROWS per partition and check).
SHOWN_ROWS = 3


def by_check(audit: Audit, run_id: str) -> dict[str, dict[str, Any]]:
    """check -> {failures: values that failed it, partitions: [label], failed: partitions
    refused, quarantined: partitions whose offending rows were quarantined, rows: a sample
    of offending rows}; most failures first."""
    grouped: dict[str, dict[str, Any]] = {}
    for key, lo, hi, state, _quarantined, details in audit.contract_failures(run_id):
        label = partition_label(key, lo, hi)
        for check in details.get("checks", []):
            entry = grouped.setdefault(
                check["check"],
                {
                    "column": check.get("column"),
                    "failures": 0,
                    "partitions": [],
                    "failed": 0,
                    "quarantined": 0,
                    "rows": [],
                },
            )
            entry["failures"] += int(check["failures"])
            entry["partitions"].append(label)
            entry["failed" if state == "failed" else "quarantined"] += 1
            room = SHOWN_ROWS - len(entry["rows"])
            entry["rows"].extend(check.get("rows", [])[: max(room, 0)])
    return dict(sorted(grouped.items(), key=lambda item: -item[1]["failures"]))


def format_contract_lines(
    contracts: dict[str, dict[str, Any]], *, max_checks: int = 10
) -> list[str]:
    if not contracts:
        return []
    lines = [f"contract   {len(contracts):,} check(s) failed:"]
    for check, entry in list(contracts.items())[:max_checks]:
        parts = entry["partitions"]
        shown = ", ".join(parts[:8]) + (f" and {len(parts) - 8} more" if len(parts) > 8 else "")
        outcome = []
        if entry["failed"]:
            outcome.append(f"{entry['failed']:,} failed")
        if entry["quarantined"]:
            outcome.append(f"{entry['quarantined']:,} with rows quarantined")
        lines.append(
            f"  [{entry['failures']:,} values] {check}  ({', '.join(outcome)} of "
            f"{len(parts):,} partitions)"
        )
        lines.append(f"       zips: {shown}")
        for row in entry["rows"]:
            lines.append(f"       row: {_short(row, entry['column'])}")
    return lines


def _short(row: dict[str, Any], column: str | None, width: int = 110) -> str:
    """An offending row on one line: the failed column first (JSON keeps no column order),
    then id-like columns, then the rest."""
    order = sorted(row, key=lambda k: (k != column, k != "id", list(row).index(k)))
    text = ", ".join(f"{k}={row[k]!r}" for k in order)
    return text if len(text) <= width else text[: width - 3] + "..."


def format_skipped_line(incremental: dict[str, Any] | None) -> list[str]:
    if not incremental:
        return []
    skipped = ", ".join(f"{n:,} {why}" for why, n in incremental["skipped"].items()) or "none"
    enqueued = ", ".join(f"{n:,} {why}" for why, n in incremental["enqueued"].items()) or "none"
    return [
        f"changed    since {incremental['since']}: enqueued {enqueued}",
        f"skipped    {incremental['skipped_total']:,} partition(s), not counted above: {skipped}",
    ]
