"""The worker's hooks for a run's contract and code fingerprint (issue 15), called by
pipeline._process: the contract on the output before the write, the quarantine rows and the
audit extras inside the write transaction. (The raw rows' fingerprint is the producer's,
taken at enqueue: see fingerprints.py.)"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from etl_worker import contracts
from etl_worker.context import PreparedRun, WorkerContext
from etl_worker.db import TableName
from etl_worker.fingerprint import allowed_modules
from etl_worker.fingerprints import code_fingerprint
from etl_worker.load import ingest
from etl_worker.partition import PartitionKey

CONTRACT_OPTION = contracts.CONTRACT_OPTION
QUARANTINE_OPTION = contracts.QUARANTINE_OPTION


def enforce_contract(
    ctx: WorkerContext, run: PreparedRun, part_id: int, key: PartitionKey, data: Any
) -> contracts.Checked:
    """The output checked against the run's contract: all of it valid without one. Raises
    `ContractViolation` (after recording what failed) when the partition must not be
    written."""
    spec = run.spec.options.get(CONTRACT_OPTION)
    if not spec:
        return contracts.Checked(valid=data)
    schema = contracts.load_contract(spec, allowed_modules(ctx.settings.transform_modules))
    checked = contracts.check(schema, data, sample_rows=ctx.settings.contract_sample_rows)
    if checked.details is None:
        return checked
    quarantine = run.spec.options.get(QUARANTINE_OPTION)
    if quarantine and checked.quarantined is not None:
        return checked  # written with the partition's rows, in its transaction
    ctx.audit.record_contract_failures(part_id, checked.details)
    raise contracts.violation(key.label, spec, checked.details)


def write_quarantine(
    cur: Any,
    ctx: WorkerContext,
    run: PreparedRun,
    where: sql.Composable,
    params: dict[str, Any],
    checked: contracts.Checked,
) -> int:
    """Replace the partition's rows in the quarantine table by this attempt's offending
    rows, on the write transaction's cursor. Returns how many were written."""
    quarantine = run.spec.options.get(QUARANTINE_OPTION)
    if not quarantine:
        return 0
    table = TableName.parse(quarantine)
    delete = sql.SQL("DELETE FROM {} WHERE {}").format(table.ident, where)
    cur.execute(ctx.audit.bind(delete, params))
    rows = contracts.quarantine_rows(checked, run.spec.run_id)
    return 0 if rows is None else ingest(cur, table, rows)


def finished_extras_sql(
    ctx: WorkerContext,
    run: PreparedRun,
    part_id: int,
    checked: contracts.Checked,
) -> str:
    """The statement recording a finished partition's code fingerprint and contract
    outcome, for its write transaction."""
    options = run.spec.options
    code = code_fingerprint(
        run.spec.transform,
        options.get(CONTRACT_OPTION) or "",
        options.get(QUARANTINE_OPTION) or "",
    )
    quarantined = checked.quarantined.num_rows if checked.quarantined is not None else None
    return ctx.audit.finished_extras_sql(
        part_id,
        code_fingerprint=code,
        rows_quarantined=quarantined,
        contract_failures=checked.details,
    )
