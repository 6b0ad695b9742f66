"""generate_companies: sizes, zip coverage and skew, determinism, and exact decimals."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from etl_worker.devtools.fake_companies import (
    MAX_ZIPS,
    RAW_SCHEMA,
    decimal_from_cents,
    generate_companies,
)
from etl_worker.errors import ConfigError


def generate(rows: int, zips: int, **options: int) -> pa.Table:
    return pa.concat_tables(generate_companies(rows, zips, **options))


def zip_codes(table: pa.Table) -> list[str]:
    return [code for code in table.column("zip_code").to_pylist() if code]


def test_chunks_follow_the_raw_schema_with_ids_one_to_n() -> None:
    chunks = list(generate_companies(1_000, 10, chunk_rows=300))

    assert [chunk.num_rows for chunk in chunks] == [300, 300, 300, 100]
    assert all(chunk.schema == RAW_SCHEMA for chunk in chunks)
    assert pa.concat_tables(chunks).column("id").to_pylist() == list(range(1, 1_001))


def test_every_zip_gets_a_row_even_across_chunk_boundaries() -> None:
    table = generate(500, 300, chunk_rows=64)

    assert len(set(zip_codes(table))) == 300


def test_fewer_rows_than_zips_gives_one_distinct_zip_per_row() -> None:
    table = generate(40, 100)

    assert len(set(zip_codes(table))) == 40
    assert table.column("zip_code").null_count == 0


def test_zip_codes_are_five_digits_and_many_have_a_leading_zero() -> None:
    codes = set(zip_codes(generate(2_000, 1_000)))

    assert all(len(code) == 5 and code.isdigit() for code in codes)
    assert sum(code.startswith("0") for code in codes) >= 0.2 * len(codes)


def test_rows_per_zip_are_skewed() -> None:
    counts = pc.value_counts(generate(50_000, 500).column("zip_code")).field("counts")

    assert pc.max(counts).as_py() > 10 * np.median(counts.to_numpy())


def test_a_few_zip_codes_are_null_and_a_few_empty() -> None:
    column = generate(20_000, 100).column("zip_code")

    assert 0 < column.null_count < 200
    assert 0 < pc.sum(pc.equal(column, "")).as_py() < 200


def test_same_seed_gives_the_same_rows_and_another_seed_does_not() -> None:
    assert generate(3_000, 30, seed=5).equals(generate(3_000, 30, seed=5))
    assert not generate(3_000, 30, seed=5).equals(generate(3_000, 30, seed=6))


def test_revenue_always_fits_numeric_14_2() -> None:
    revenue = generate(50_000, 100).column("revenue").to_pylist()

    present = [value for value in revenue if value is not None]
    assert max(abs(value) for value in present) <= Decimal("999999999999.99")
    assert any(value < 0 for value in present)


def test_decimal_from_cents_is_exact_for_large_and_negative_values() -> None:
    cents = np.array([0, 1, -1, 12_345, -99_999_999_999_999, 99_999_999_999_999])

    array = decimal_from_cents(cents, mask=np.array([False, False, False, False, False, True]))

    assert array.type == pa.decimal128(14, 2)
    assert array.to_pylist() == [
        Decimal("0.00"),
        Decimal("0.01"),
        Decimal("-0.01"),
        Decimal("123.45"),
        Decimal("-999999999999.99"),
        None,
    ]


@pytest.mark.parametrize(
    ("rows", "zips", "message"),
    [
        (-1, 10, "--rows must be 0 or more"),
        (10, 0, "--zips must be between 1 and"),
        (10, MAX_ZIPS + 1, "--zips must be between 1 and"),
    ],
)
def test_impossible_sizes_are_refused(rows: int, zips: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        next(generate_companies(rows, zips))


def test_zero_rows_gives_no_chunks() -> None:
    assert list(generate_companies(0, 10)) == []
