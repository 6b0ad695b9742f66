"""Data contracts: a pandera schema checked on each partition's output before it is written.

A run names a contract (`--contract module:Name`, a pandera `DataFrameModel` or
`DataFrameSchema`). The worker checks the transform's output, as it will be written (cast to
the target's types), with `lazy=True`, so one check reports every failure at once. Then:

- no failure: the partition is written as usual;
- failures, no quarantine table: the partition is not written (the target keeps its rows)
  and fails for good (`ContractViolation`, no retry: the same rows fail the same way), with
  the failed checks, their counts and a few offending rows in the audit row;
- failures and a quarantine table (`--quarantine TABLE`): the offending rows, each with the
  checks it failed, go to that table and the other rows to the target, in the partition's
  one write transaction. A failure no row can be blamed for (a missing column, a wrong
  type) still fails the partition.

pandera is an optional dependency (the `contracts` extra): only a run with a contract imports
it, in the worker that checks.
"""

from __future__ import annotations

import functools
import importlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from etl_worker.config import Settings
from etl_worker.db import TableName, resolve_schema, table_columns, table_exists
from etl_worker.errors import ConfigError, PermanentPartitionError
from etl_worker.fingerprint import allowed_modules, check_allowed
from etl_worker.frames import to_frame
from etl_worker.transforms import load_named

#: Run options (runs.options) naming the run's contract and quarantine table.
CONTRACT_OPTION = "contract"
QUARANTINE_OPTION = "quarantine"
#: The quarantine table's own columns, after the target's.
FAILED_CHECKS_COLUMN = "failed_checks"
RUN_ID_COLUMN = "run_id"


class ContractViolation(PermanentPartitionError):
    """The partition's output broke its run's contract; `details` says how (JSON-ready)."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


@dataclass
class Checked:
    """A partition's output after its contract: the rows to write to the target, those to
    quarantine (with a `failed_checks` column), and what the check found."""

    valid: pa.Table
    quarantined: pa.Table | None = None
    details: dict[str, Any] | None = None
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)


@functools.cache
def load_contract(spec: str, allowed: tuple[str, ...]) -> Any:
    """The pandera schema named by `module:Name`: a DataFrameSchema, or a DataFrameModel
    class (turned into its schema). Cached: every partition of a run checks the same.
    Its module must be on the allow-list (`fingerprint.allowed_modules`), as a transform's:
    whoever can write a run row names the contract every worker imports."""
    check_allowed(spec, allowed, "contract")
    target: Any = load_named(spec, "contract", "(example: examples.contracts:CleanCompanies)")
    schema = target.to_schema() if hasattr(target, "to_schema") else target
    if not (hasattr(schema, "validate") and hasattr(schema, "columns")):
        raise ConfigError(
            f"contract {spec!r} is not a pandera DataFrameModel or DataFrameSchema — check "
            "--contract"
        )
    return schema


def check(schema: Any, data: pa.Table, *, sample_rows: int) -> Checked:
    """Check `data` (the partition's rows as they will be written) against `schema`."""
    started = time.perf_counter()
    errors = importlib.import_module("pandera.errors")
    frame = to_frame(data)
    try:
        schema.validate(frame, lazy=True)
    except errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return Checked(valid=data, seconds=time.perf_counter() - started)
    failures, bad_rows, whole = _group(cases, data, sample_rows)
    details = {
        "rows_checked": data.num_rows,
        "rows_failed": len(bad_rows),
        "whole_partition": whole,
        "checks": failures,
    }
    checked = Checked(valid=data, details=details, failures=failures)
    if not whole and bad_rows:
        indices = sorted(bad_rows)
        mask = pc.is_in(pa.array(range(data.num_rows)), pa.array(indices))
        names = pa.array(["; ".join(bad_rows[i]) for i in indices], pa.string())
        checked.valid = data.filter(pc.invert(mask))
        checked.quarantined = data.take(pa.array(indices)).append_column(
            FAILED_CHECKS_COLUMN, names
        )
    checked.seconds = time.perf_counter() - started
    return checked


def _check_name(column: Any, check_name: Any) -> str:
    column = "" if column is None or column != column else str(column)
    return f"{column}: {check_name}" if column else str(check_name)


def _group(
    cases: Any, data: pa.Table, sample_rows: int
) -> tuple[list[dict[str, Any]], dict[int, list[str]], bool]:
    """pandera's failure cases (one row per failing value) grouped by check: [{check,
    column, failures, rows}], the failed check names per offending row index, and whether
    some failure belongs to no row (the schema itself: a column, a type)."""
    by_check: dict[str, dict[str, Any]] = {}
    bad_rows: dict[int, list[str]] = {}
    whole = False
    for column, check_name, index in zip(
        cases["column"], cases["check"], cases["index"], strict=True
    ):
        name = _check_name(column, check_name)
        entry = by_check.setdefault(
            name,
            {
                "check": name,
                "column": None if name == str(check_name) else str(column),
                "failures": 0,
                "indices": [],
            },
        )
        entry["failures"] += 1
        if index is None or index != index:  # None or NaN: the failure is no row's
            whole = True
            continue
        row = int(index)
        if len(entry["indices"]) < sample_rows and row not in entry["indices"]:
            entry["indices"].append(row)
        names = bad_rows.setdefault(row, [])
        if name not in names:
            names.append(name)
    failures = []
    for entry in by_check.values():
        indices = entry.pop("indices")
        entry["rows"] = _json_rows(data.take(pa.array(indices, pa.int64()))) if indices else []
        failures.append(entry)
    failures.sort(key=lambda e: (-e["failures"], e["check"]))
    return failures, bad_rows, whole


def _json_rows(rows: pa.Table) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: what JSON has no type for (dates, decimals) as text."""
    return json.loads(json.dumps(rows.to_pylist(), default=str))


def summary(details: dict[str, Any], *, counts: bool = True) -> str:
    """The failed checks (with their counts), most failures first."""
    shown = [
        f"{c['check']} ({c['failures']:,})" if counts else c["check"] for c in details["checks"][:5]
    ]
    more = len(details["checks"]) - 5
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def violation(label: str, contract: str, details: dict[str, Any]) -> ContractViolation:
    """The partition's error. Its text names the checks but no counts, so etl-status groups
    the partitions that failed the same checks; the counts are in `details`."""
    what = "some rows" if details["rows_failed"] else "the partition as a whole"
    return ContractViolation(
        f"partition {label} breaks contract {contract}: {what} failed "
        f"{summary(details, counts=False)} — not written; fix the data or the transform, then "
        "etl-enqueue --resume",
        details,
    )


# -- the quarantine table ---------------------------------------------------------------------


def create_quarantine(conn: psycopg.Connection, target: TableName, quarantine: TableName) -> None:
    """The quarantine table, when missing: the target's columns and types (no constraints:
    a row that breaks the contract may break them too), plus the checks it failed and the
    run that put it there."""
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"etl-worker create {quarantine}",)
        )
        if table_exists(conn, quarantine):
            names = {c.name for c in table_columns(conn, quarantine)}
            if not {FAILED_CHECKS_COLUMN, RUN_ID_COLUMN} <= names:
                raise ConfigError(
                    f'quarantine table "{quarantine}" exists without the columns '
                    f"{FAILED_CHECKS_COLUMN} and {RUN_ID_COLUMN} — name a new table"
                )
            return
        target_names = {c.name for c in table_columns(conn, target)}
        if {FAILED_CHECKS_COLUMN, RUN_ID_COLUMN} & target_names:
            raise ConfigError(
                f'target "{target}" has a column named {FAILED_CHECKS_COLUMN} or '
                f"{RUN_ID_COLUMN}, which the quarantine table adds — rename it"
            )
        conn.execute(
            sql.SQL("CREATE TABLE {} AS SELECT * FROM {} WITH NO DATA").format(
                quarantine.ident, target.ident
            )
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN {} text, ADD COLUMN {} text").format(
                quarantine.ident,
                sql.Identifier(FAILED_CHECKS_COLUMN),
                sql.Identifier(RUN_ID_COLUMN),
            )
        )


def quarantine_rows(checked: Checked, run_id: str) -> pa.Table | None:
    """The rows to write to the quarantine table, with the run's id."""
    if checked.quarantined is None:
        return None
    rows = checked.quarantined
    return rows.append_column(RUN_ID_COLUMN, pa.array([run_id] * rows.num_rows, pa.string()))


def run_options(conn: psycopg.Connection, settings: Settings, target: TableName) -> dict[str, str]:
    """The run options naming its contract and quarantine table (run_checks reads them).
    Loads the contract here, so a wrong name fails before anything is written."""
    if not settings.contract:
        return {}
    load_contract(settings.contract, allowed_modules(settings.transform_modules))
    options = {CONTRACT_OPTION: settings.contract}
    if settings.quarantine_table:
        quarantine = resolve_schema(conn, TableName.parse(settings.quarantine_table))
        if quarantine.schema is None:  # a new table: next to the target
            quarantine = TableName(quarantine.name, resolve_schema(conn, target).schema)
        options[QUARANTINE_OPTION] = str(quarantine)
    return options


def create_quarantine_for(
    conn: psycopg.Connection, target: TableName, options: dict[str, Any]
) -> None:
    """The run's quarantine table, created when it names one that is missing."""
    if options.get(QUARANTINE_OPTION):
        create_quarantine(conn, target, TableName.parse(options[QUARANTINE_OPTION]))
