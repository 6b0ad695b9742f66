"""The measurements behind docs/reliability.md: fault tests record what they injected, what
the system did, how long recovery took and how many rows were lost or doubled; this module
renders them as the doc's table.

    ETL_RELIABILITY_REPORT=reliability.jsonl pytest -m faults tests/faults
    python -m tests.support.reliability reliability.jsonl

Without ETL_RELIABILITY_REPORT, `record` does nothing (the assertions are the tests).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.support.data import table_difference

ENV = "ETL_RELIABILITY_REPORT"


def record(
    fault: str,
    injected: str,
    behaviour: str,
    *,
    rows_lost: int,
    rows_doubled: int,
    recovery_seconds: float | None = None,
) -> None:
    """Append one measured row (the test names itself) to $ETL_RELIABILITY_REPORT."""
    path = os.environ.get(ENV)
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    if "[amqp" in test:  # run on both brokers (rabbit.BOTH_BROKERS): say which one this was
        fault += ", on RabbitMQ"
    row = {
        "fault": fault,
        "injected": injected,
        "behaviour": behaviour,
        "recovery_seconds": None if recovery_seconds is None else round(recovery_seconds, 1),
        "rows_lost": rows_lost,
        "rows_doubled": rows_doubled,
        "test": test,
    }
    with open(path, "a") as out:
        out.write(json.dumps(row) + "\n")


def exactly_once(
    url: str,
    fault: str,
    injected: str,
    behaviour: str,
    *,
    recovery_seconds: float | None = None,
    expected: str = "raw_companies",
) -> tuple[int, int]:
    """Assert the target holds every `expected` row exactly once (EXCEPT ALL both ways),
    then record the fault with the rows lost and doubled as measured. Returns them."""
    lost, doubled = table_difference(url, expected, "clean_companies")
    assert (lost, doubled) == (0, 0), f"{lost} row(s) lost, {doubled} row(s) doubled"
    record(
        fault,
        injected,
        behaviour,
        rows_lost=lost,
        rows_doubled=doubled,
        recovery_seconds=recovery_seconds,
    )
    return lost, doubled


def render(rows: list[dict[str, object]]) -> str:
    """A Markdown table, one line per recorded fault (the last run of each test wins)."""
    latest: dict[tuple[object, object], dict[str, object]] = {}
    for row in rows:
        latest[(row["test"], row["fault"])] = row
    lines = [
        "| fault | how it was injected | what the system did | recovery | rows lost "
        "| rows doubled | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in latest.values():
        seconds = row["recovery_seconds"]
        recovery = "-" if seconds is None else f"{seconds} s"
        cells = [
            row["fault"],
            row["injected"],
            row["behaviour"],
            recovery,
            row["rows_lost"],
            row["rows_doubled"],
            f"`{row['test']}`",
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.support.reliability RESULTS.jsonl", file=sys.stderr)
        return 2
    text = Path(argv[0]).read_text()
    print(render([json.loads(line) for line in text.splitlines() if line.strip()]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
