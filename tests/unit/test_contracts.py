"""contracts.check on Arrow tables: failures grouped by check, offending rows split off."""

from __future__ import annotations

import pandera.pandas as pandera
import pyarrow as pa
import pytest

from etl_worker import contracts
from etl_worker.errors import ConfigError, PermanentPartitionError, TransformNotAllowed
from etl_worker.fingerprint import allowed_modules

SCHEMA = pandera.DataFrameSchema(
    {
        "id": pandera.Column(checks=pandera.Check.ge(1)),
        "employees": pandera.Column(nullable=True, checks=pandera.Check.le(30)),
        "state": pandera.Column(nullable=True, checks=pandera.Check.isin(["NY", "CA"])),
    }
)


def table(employees: list[int | None], states: list[str | None]) -> pa.Table:
    n = len(employees)
    return pa.table(
        {
            "id": pa.array(range(1, n + 1), pa.int64()),
            "employees": pa.array(employees, pa.int32()),
            "state": pa.array(states, pa.string()),
        }
    )


def test_a_passing_table_is_all_valid() -> None:
    data = table([1, None, 30], ["NY", None, "CA"])
    checked = contracts.check(SCHEMA, data, sample_rows=5)
    assert checked.details is None and checked.quarantined is None
    assert checked.valid is data


def test_failures_are_grouped_by_check_and_offending_rows_split_off() -> None:
    data = table([1, 31, 40, None, 50], ["NY", "ZZ", "CA", "ZZ", "NY"])

    checked = contracts.check(SCHEMA, data, sample_rows=2)

    assert checked.details is not None
    counts = {c["check"]: c["failures"] for c in checked.details["checks"]}
    assert counts == {"employees: less_than_or_equal_to(30)": 3, "state: isin(['NY', 'CA'])": 2}
    sample = checked.details["checks"][0]["rows"]
    assert len(sample) == 2 and all(r["employees"] > 30 for r in sample)  # capped at 2
    assert checked.details["rows_failed"] == 4 and not checked.details["whole_partition"]
    assert checked.valid.column("id").to_pylist() == [1]
    bad = checked.quarantined
    assert bad is not None and bad.column("id").to_pylist() == [2, 3, 4, 5]
    ids, checks = bad.column("id").to_pylist(), bad.column("failed_checks").to_pylist()
    failed = dict(zip(ids, checks, strict=True))
    assert failed[2] == "employees: less_than_or_equal_to(30); state: isin(['NY', 'CA'])"
    assert failed[4] == "state: isin(['NY', 'CA'])"


def test_a_failure_of_no_row_is_the_whole_partition_s() -> None:
    data = table([1], ["NY"]).drop_columns(["state"])  # a column the schema requires
    checked = contracts.check(SCHEMA, data, sample_rows=5)
    assert checked.details is not None and checked.details["whole_partition"]
    assert checked.quarantined is None
    error = contracts.violation("10016", "m:S", checked.details)
    assert isinstance(error, PermanentPartitionError)
    assert "the partition as a whole" in str(error) and error.details is checked.details


def test_a_contract_is_loaded_by_name_or_refused_clearly() -> None:
    allowed = allowed_modules(["tests.support"])
    model = contracts.load_contract("tests.support.contracts:SmallCompanies", allowed)
    assert isinstance(model, pandera.DataFrameSchema)
    with pytest.raises(ConfigError, match=r"contract 'tests\.support\.contracts:NOPE' not found"):
        contracts.load_contract("tests.support.contracts:NOPE", allowed)
    with pytest.raises(ConfigError, match="not a pandera DataFrameModel"):
        contracts.load_contract("etl_worker.transforms:identity", allowed)


def test_a_contract_outside_the_allow_list_is_refused() -> None:
    # Whoever can write a run row names the contract every worker imports, as the transform.
    spec = "tests.support.never_imported_contract:Anything"
    with pytest.raises(TransformNotAllowed, match=r"contract .* is not on the allow-list"):
        contracts.load_contract(spec, allowed_modules([]))
