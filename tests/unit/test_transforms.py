"""clean_companies and identity: what the default transform does to each column."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from etl_worker.devtools.fake_companies import RAW_SCHEMA, generate_companies
from etl_worker.frames import to_frame as arrow_frame  # what the pipeline hands a transform
from etl_worker.transforms import clean_companies, identity

TODAY = dt.datetime.now(dt.UTC).date()
D = Decimal
NAN = float("nan")


def same(*raw: Any) -> list[tuple[Any, Any]]:
    """Values the transform must return as they came."""
    return [(value, value) for value in raw]


# Each column: (raw value, value after clean_companies), one pair per row.
MESSY: dict[str, list[tuple[Any, Any]]] = {
    "id": same(1, 2, 3, 4, 5, 6, 7, 8, 9),
    "zip_code": same("02134", "", None, "00501", " 02134 ", "10001", "99950", "02134", "abc"),
    "company_name": [
        ("  ACME   widgets inc ", "Acme Widgets Inc"),
        ("\tblue  ridge\tPLUMBING llc\n", "Blue Ridge Plumbing Llc"),
        ("o'brien 2nd st deli", "O'Brien 2nd St Deli"),
        (None, None),
        ("", ""),
        ("   ", ""),
        ("Müller gmbh", "Müller Gmbh"),
        ("Already Clean Co", "Already Clean Co"),
        ("1st choice 42ND ave", "1st Choice 42nd Ave"),
    ],
    "street": [
        ("  123  main ST. ", "123 Main St."),
        ("42ND street", "42nd Street"),
        ("1st ave #4b", "1st Ave #4B"),
        (None, None),
        ("", ""),
        ("9 rue de l'église", "9 Rue De L'Église"),
        ("500 N. 3RD ST", "500 N. 3rd St"),
        ("77  Sunset \r\n Blvd", "77 Sunset Blvd"),
        ("100 Main St Suite 200", "100 Main St Suite 200"),
    ],
    "city": [
        ("new york", "New York"),
        ("  SAN   JOSÉ ", "San José"),
        ("st. louis", "St. Louis"),
        (None, None),
        ("", ""),
        ("winston-salem", "Winston-Salem"),
        ("coeur d'alene", "Coeur D'Alene"),
        ("BOSTON", "Boston"),
        ("\tDenver\t", "Denver"),
    ],
    "state": [
        (" ny", "NY"),
        ("Ca ", "CA"),
        ("tx", "TX"),
        (None, None),
        ("", None),
        ("XX", None),
        ("New York", None),
        ("\tdc\t", "DC"),
        ("pr", "PR"),
    ],
    "phone": [
        ("(212) 555-0142", "(212) 555-0142"),
        ("212.555.0142", "(212) 555-0142"),
        ("+1 212 555 0142", "(212) 555-0142"),
        ("2125550142", "(212) 555-0142"),
        ("n/a", None),
        (None, None),
        ("555-0142", None),
        ("1-800-555-0199", "(800) 555-0199"),
        ("22125550142", None),
    ],
    "website": [
        ("WWW.Acme.com", "https://acme.com"),
        ("http://acme.com/", "https://acme.com"),
        ("acme.com", "https://acme.com"),
        ("https://www.acme.com/about", "https://acme.com"),
        (None, None),
        ("n/a", None),
        ("", None),
        (" HTTPS://Blue-Ridge.co.uk:8080/x?y=1#z ", "https://blue-ridge.co.uk"),
        ("www.", None),
    ],
    "naics_code": same(541511, None, 722511, 236118, None, 111998, 541511, 813110, 445110),
    "employees": [
        (10, 10),
        (-1, None),
        (0, 0),
        (None, None),
        (2_000_000, 2_000_000),
        (-999, None),
        (5, 5),
        (1, 1),
        (3, 3),
    ],
    "revenue": [
        (D("1234.56"), D("1234.56")),
        (D("-5.00"), None),
        (D("0.00"), D("0.00")),
        (None, None),
        (D("100000000000.00"), D("100000000000.00")),
        (D("100000000000.01"), None),
        (D("999999999999.99"), None),
        (D("0.01"), D("0.01")),
        (D("-0.01"), None),
    ],
    "founded_date": [
        (dt.date(1850, 1, 1), dt.date(1850, 1, 1)),
        (dt.date(2025, 12, 31), dt.date(2025, 12, 31)),
        (None, None),
        (TODAY, TODAY),
        (TODAY + dt.timedelta(days=1), None),
        (dt.date(2999, 1, 1), None),
        (dt.date(1999, 6, 30), dt.date(1999, 6, 30)),
        (dt.date(1970, 1, 1), dt.date(1970, 1, 1)),
        (dt.date(2000, 2, 29), dt.date(2000, 2, 29)),
    ],
    "latitude": [
        (40.712776123, 40.712776123),
        (-90.0, -90.0),
        (90.0, 90.0),
        (90.000001, None),
        (999.0, None),
        (None, None),
        (-999.0, None),
        (NAN, None),
        (0.0, 0.0),
    ],
    "longitude": [
        (-74.006015, -74.006015),
        (-180.0, -180.0),
        (180.0, 180.0),
        (180.5, None),
        (999.0, None),
        (None, None),
        (-181.0, None),
        (0.0, 0.0),
        (-122.4194, -122.4194),
    ],
    "notes": same(
        "tab\there",
        "line\nbreak",
        "\\N",
        "",
        None,
        "quote ' \" \\",
        "中文 é 🚀",
        "\r\n",
        "  spaced  ",
    ),
    "updated_at": same(*[dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)] * 8, None),
}
UNCHANGED = ["id", "zip_code", "naics_code", "notes", "updated_at"]


def raw(column: str) -> list[Any]:
    return [value for value, _ in MESSY[column]]


def cleaned(column: str) -> list[Any]:
    return [value for _, value in MESSY[column]]


def messy_table(rows: int | None = None) -> pa.Table:
    columns = {name: raw(name)[:rows] for name in MESSY}
    return pa.Table.from_pydict(columns, schema=RAW_SCHEMA)


def nullable_frame(table: pa.Table) -> pd.DataFrame:
    """Classic pandas: object strings, Int64/Float64, object Decimal and date, datetime64."""
    kinds = {pa.int64(): "Int64", pa.int32(): "Int32", pa.float64(): "Float64"}
    df = table.to_pandas()
    for field in table.schema:
        if field.type in kinds:
            df[field.name] = pd.array(table[field.name].to_pylist(), dtype=kinds[field.type])
        elif pa.types.is_string(field.type):
            df[field.name] = pd.Series(table[field.name].to_pylist(), dtype=object)
    return df


def default_frame(table: pa.Table) -> pd.DataFrame:
    """Plain `to_pandas()`: str, float64 with NaN for nullable integers, object Decimal."""
    return table.to_pandas()


FLAVOURS: dict[str, Callable[[pa.Table], pd.DataFrame]] = {
    "arrow": arrow_frame,
    "nullable": nullable_frame,
    "default": default_frame,
}


@pytest.fixture(params=list(FLAVOURS))
def to_frame(request: pytest.FixtureRequest) -> Callable[[pa.Table], pd.DataFrame]:
    return FLAVOURS[request.param]


def values(column: pd.Series) -> list[Any]:
    """Python values with every flavour of missing (NA, None, NaN) as None."""
    return pa.array(column, from_pandas=True).to_pylist()


@pytest.mark.parametrize("column", list(MESSY))
def test_clean_companies_gives_the_expected_value_per_column(
    to_frame: Callable[[pa.Table], pd.DataFrame], column: str
) -> None:
    out = clean_companies(to_frame(messy_table()))

    assert values(out[column]) == cleaned(column)


def test_clean_companies_keeps_row_count_and_column_order(
    to_frame: Callable[[pa.Table], pd.DataFrame],
) -> None:
    df = to_frame(messy_table())

    out = clean_companies(df)

    assert list(out.columns) == list(df.columns)
    assert len(out) == len(df)
    assert out.index.equals(df.index)


def test_clean_companies_returns_partition_key_and_untouched_columns_as_given(
    to_frame: Callable[[pa.Table], pd.DataFrame],
) -> None:
    df = to_frame(messy_table())

    out = clean_companies(df)

    for column in UNCHANGED:
        pd.testing.assert_series_equal(out[column], df[column])


def test_clean_companies_does_not_modify_its_input(
    to_frame: Callable[[pa.Table], pd.DataFrame],
) -> None:
    df = to_frame(messy_table())
    before = df.copy(deep=True)

    clean_companies(df)

    pd.testing.assert_frame_equal(df, before)


def test_clean_companies_accepts_an_empty_partition(
    to_frame: Callable[[pa.Table], pd.DataFrame],
) -> None:
    df = to_frame(messy_table(rows=0))

    out = clean_companies(df)

    assert len(out) == 0
    assert list(out.columns) == list(df.columns)


def test_clean_companies_skips_columns_the_frame_does_not_have() -> None:
    df = arrow_frame(messy_table()).loc[:, ["id", "zip_code", "state"]]

    out = clean_companies(df)

    assert list(out.columns) == ["id", "zip_code", "state"]
    assert values(out["state"]) == cleaned("state")


def test_clean_companies_keeps_integers_decimals_and_dates_exact_on_arrow_input() -> None:
    out = clean_companies(arrow_frame(messy_table()))

    assert out["employees"].dtype == pd.ArrowDtype(pa.int32())
    assert out["revenue"].dtype == pd.ArrowDtype(pa.decimal128(14, 2))
    assert out["founded_date"].dtype == pd.ArrowDtype(pa.date32())
    assert out["latitude"].dtype == pd.ArrowDtype(pa.float64())


def test_clean_companies_output_casts_back_to_the_raw_table_types(
    to_frame: Callable[[pa.Table], pd.DataFrame],
) -> None:
    out = clean_companies(to_frame(messy_table()))

    table = pa.Table.from_pandas(out, preserve_index=False).cast(RAW_SCHEMA)

    assert table.column("employees").to_pylist() == cleaned("employees")
    assert table.column("revenue").to_pylist() == cleaned("revenue")


def test_clean_companies_leaves_only_valid_values_in_generated_data() -> None:
    df = arrow_frame(next(generate_companies(5_000, 50, seed=7)))

    out = clean_companies(df)

    def valid_or_null(column: str, pattern: str) -> bool:
        present = out[column].dropna()
        return bool(present.str.fullmatch(pattern).all())

    assert valid_or_null("state", r"[A-Z]{2}")
    assert valid_or_null("phone", r"\(\d{3}\) \d{3}-\d{4}")
    assert valid_or_null("website", r"https://[a-z0-9.-]+\.[a-z]{2,}")
    assert valid_or_null("company_name", r"\S+( \S+)*")
    assert (out["employees"].dropna() >= 0).all()
    assert out["latitude"].dropna().between(-90, 90).all()
    assert out["longitude"].dropna().between(-180, 180).all()
    assert out["phone"].notna().sum() > 0.8 * len(out)


def test_identity_returns_the_frame_unchanged() -> None:
    df = arrow_frame(messy_table())

    out = identity(df)

    pd.testing.assert_frame_equal(out, df)


def test_messy_examples_cover_every_raw_column() -> None:
    assert list(MESSY) == RAW_SCHEMA.names
    assert len({len(pairs) for pairs in MESSY.values()}) == 1
