"""seed_raw_table against a real Postgres: the table it leaves behind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from etl_worker.db import adbc_connect, connect
from etl_worker.devtools.fake_companies import RAW_SCHEMA, generate_companies
from etl_worker.devtools.seed import SeedResult, seed_raw_table
from etl_worker.errors import EtlError
from tests.support.services import BASE_DATABASE_URL, create_database, drop_database, with_database

ROWS, ZIPS = 5_000, 50

RAW_COLUMNS = [
    ("id", "bigint"),
    ("zip_code", "text"),
    ("company_name", "text"),
    ("street", "text"),
    ("city", "text"),
    ("state", "text"),
    ("phone", "text"),
    ("website", "text"),
    ("naics_code", "integer"),
    ("employees", "integer"),
    ("revenue", "numeric(14,2)"),
    ("founded_date", "date"),
    ("latitude", "double precision"),
    ("longitude", "double precision"),
    ("notes", "text"),
    ("updated_at", "timestamp with time zone"),
]


@pytest.fixture(scope="module")
def seeded() -> Iterator[tuple[str, SeedResult]]:
    """One seeded table in a database of its own, shared by the read-only tests below."""
    url = create_database()
    try:
        yield url, seed_raw_table(url, rows=ROWS, zips=ZIPS, seed=42)
    finally:
        drop_database(url)


@pytest.fixture
def missing_database() -> Iterator[str]:
    """URL of a database that does not exist yet; dropped after the test if it was created."""
    url = with_database(BASE_DATABASE_URL, f"etl_test_{uuid.uuid4().hex[:12]}")
    yield url
    drop_database(url)


@pytest.fixture(scope="module")
def db(seeded: tuple[str, SeedResult]) -> Iterator[psycopg.Connection]:
    with connect(seeded[0]) as conn:
        yield conn


def scalar(conn: psycopg.Connection, query: str, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


def checksum(url: str, table: str = "raw_companies") -> str:
    with connect(url) as conn:
        return scalar(conn, f"SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {table} t")  # noqa: S608


def test_seed_reports_rows_zips_and_size(seeded: tuple[str, SeedResult]) -> None:
    result = seeded[1]

    assert (result.table, result.rows, result.zips) == ("raw_companies", ROWS, ZIPS)
    assert result.bytes > 0
    assert result.seconds > 0
    assert f"{ROWS:,} rows, {ZIPS:,} zips" in result.summary()


def test_table_has_the_documented_columns_key_and_zip_index(db: psycopg.Connection) -> None:
    columns = db.execute(
        """
        SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
        WHERE attrelid = 'raw_companies'::regclass AND attnum > 0 AND NOT attisdropped
        ORDER BY attnum
        """
    ).fetchall()
    indexes = db.execute(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'raw_companies' ORDER BY indexname"
    ).fetchall()

    assert columns == RAW_COLUMNS
    assert [definition for (definition,) in indexes] == [
        "CREATE UNIQUE INDEX raw_companies_pkey ON public.raw_companies USING btree (id)",
        "CREATE INDEX raw_companies_zip_code_idx ON public.raw_companies USING btree (zip_code)",
    ]


def test_table_is_analyzed(db: psycopg.Connection) -> None:
    analyzed = scalar(
        db, "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = %s",
        "raw_companies",
    )  # fmt: skip
    assert analyzed


def test_table_holds_exactly_the_generated_rows(seeded: tuple[str, SeedResult]) -> None:
    with adbc_connect(seeded[0]) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM raw_companies ORDER BY id")
        # ADBC reads numeric as text; the cast checks it parses back to the same decimals.
        stored = cur.fetch_arrow_table().cast(RAW_SCHEMA)

    generated = pa.concat_tables(generate_companies(ROWS, ZIPS, seed=42))
    assert stored.num_rows == ROWS
    for name in generated.column_names:  # column by column, for a readable failure
        assert stored.column(name).to_pylist() == generated.column(name).to_pylist(), name


def test_every_requested_zip_has_rows_and_codes_keep_leading_zeros(
    db: psycopg.Connection,
) -> None:
    zips = scalar(db, "SELECT count(DISTINCT zip_code) FROM raw_companies WHERE zip_code <> ''")
    malformed = scalar(db, r"SELECT count(*) FROM raw_companies WHERE zip_code !~ '^\d{5}$'")
    empty = scalar(db, "SELECT count(*) FROM raw_companies WHERE zip_code = ''")
    leading_zero = scalar(db, "SELECT count(DISTINCT zip_code) FROM raw_companies "
                              "WHERE zip_code LIKE '0%'")  # fmt: skip

    assert zips == ZIPS
    assert malformed == empty  # only the '' rows (NULL never matches)
    assert leading_zero >= 5


def test_rows_per_zip_are_skewed(db: psycopg.Connection) -> None:
    largest, median = db.execute(
        """
        SELECT max(n), percentile_cont(0.5) WITHIN GROUP (ORDER BY n)
        FROM (SELECT count(*) AS n FROM raw_companies WHERE zip_code <> '' GROUP BY zip_code) z
        """
    ).fetchone()  # type: ignore[misc]

    assert largest > 5 * median


def test_some_zip_codes_are_null_and_some_empty(db: psycopg.Connection) -> None:
    assert scalar(db, "SELECT count(*) FROM raw_companies WHERE zip_code IS NULL") > 0
    assert scalar(db, "SELECT count(*) FROM raw_companies WHERE zip_code = ''") > 0


@pytest.mark.parametrize(
    ("kind", "condition"),
    [
        ("tab", "strpos(notes, chr(9)) > 0"),
        ("newline", "strpos(notes, chr(10)) > 0"),
        ("carriage return", "strpos(notes, chr(13)) > 0"),
        ("backslash", "strpos(notes, chr(92)) > 0"),
        ("the two characters \\N alone", "notes = chr(92) || 'N'"),
        ("single quote", "strpos(notes, chr(39)) > 0"),
        ("double quote", "strpos(notes, chr(34)) > 0"),
        ("accented letter", "strpos(notes, 'é') > 0"),
        ("chinese", "strpos(notes, '中文') > 0"),
        ("emoji", "strpos(notes, '🚀') > 0"),
        ("empty string", "notes = ''"),
        ("NULL", "notes IS NULL"),
    ],
)
def test_notes_contain_awkward_values(db: psycopg.Connection, kind: str, condition: str) -> None:
    count = scalar(db, f"SELECT count(*) FROM raw_companies WHERE {condition}")  # noqa: S608

    assert count > 0, kind


@pytest.mark.parametrize(
    ("kind", "condition"),
    [
        ("padded company name", "company_name <> btrim(company_name)"),
        ("lower-case state", "state ~ '^\\s*[a-z]{2}\\s*$'"),
        ("invalid state", "btrim(upper(state)) !~ '^[A-Z]{2}$'"),
        ("phone as dotted digits", "phone ~ '^\\d{3}\\.\\d{3}\\.\\d{4}$'"),
        ("junk phone", "phone !~ '\\d{7}' AND phone !~ '\\d{3}\\D+\\d{3}\\D+\\d{4}'"),
        ("upper-case WWW website", "website LIKE 'WWW.%'"),
        ("NULL naics", "naics_code IS NULL"),
        ("negative employees", "employees < 0"),
        ("negative revenue", "revenue < 0"),
        ("absurd revenue", "revenue > 1e11"),
        ("out-of-range latitude", "abs(latitude) > 90"),
        ("NULL founded date", "founded_date IS NULL"),
        ("full-precision latitude", "latitude::text ~ '\\.\\d{9,}'"),
    ],
)
def test_other_columns_are_messy_too(db: psycopg.Connection, kind: str, condition: str) -> None:
    count = scalar(db, f"SELECT count(*) FROM raw_companies WHERE {condition}")  # noqa: S608

    assert count > 0, kind


def test_same_seed_gives_the_same_table_and_another_seed_does_not(fresh_database: str) -> None:
    seed_raw_table(fresh_database, rows=2_000, zips=20, seed=42)
    first = checksum(fresh_database)
    seed_raw_table(fresh_database, rows=2_000, zips=20, seed=42)
    again = checksum(fresh_database)
    seed_raw_table(fresh_database, rows=2_000, zips=20, seed=43)
    other = checksum(fresh_database)

    assert first == again
    assert other != first


def test_seeding_again_replaces_the_table(fresh_database: str) -> None:
    seed_raw_table(fresh_database, rows=3_000, zips=20)
    seed_raw_table(fresh_database, rows=100, zips=10)

    with connect(fresh_database) as conn:
        assert scalar(conn, "SELECT count(*) FROM raw_companies") == 100


def test_seed_creates_a_missing_database(missing_database: str) -> None:
    result = seed_raw_table(missing_database, rows=10, zips=2)

    assert result.rows == 10
    with connect(missing_database) as conn:
        assert scalar(conn, "SELECT count(*) FROM raw_companies") == 10


def test_seed_writes_a_schema_qualified_table_creating_the_schema(fresh_database: str) -> None:
    result = seed_raw_table(fresh_database, rows=50, zips=5, table="staging.companies")

    assert result.table == "staging.companies"
    with connect(fresh_database) as conn:
        assert scalar(conn, "SELECT count(*) FROM staging.companies") == 50


def test_failed_seed_explains_itself_and_keeps_the_old_table(fresh_database: str) -> None:
    seed_raw_table(fresh_database, rows=30, zips=3)
    with connect(fresh_database) as conn:
        conn.execute("CREATE VIEW big_companies AS SELECT * FROM raw_companies")

    with pytest.raises(EtlError, match='cannot seed table "raw_companies" in database "etl_test_'):
        seed_raw_table(fresh_database, rows=500, zips=5)

    with connect(fresh_database) as conn:
        assert scalar(conn, "SELECT count(*) FROM raw_companies") == 30
