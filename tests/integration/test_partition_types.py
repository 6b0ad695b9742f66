"""Any partition column type: a raw table partitioned by a column of each supported type runs
through real workers with the identity transform and lands exactly (EXCEPT ALL both ways);
every audit row names its partition by Postgres's own text of the value, the same whatever
the database's DateStyle and TimeZone; `--zips` values are parsed by the column's type:
stored in that canonical form, or refused in one line naming the value, the column and its
type, before anything is written.

One database and one worker for all the types (each type has its own tables), so the eleven
cases cost one worker start."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from etl_worker import producer
from etl_worker.audit import Audit
from etl_worker.bench.fleet import delete_redis_prefix
from etl_worker.config import Settings
from etl_worker.db import TableName, adbc_connect, connect, find_column, table_columns
from etl_worker.errors import ConfigError
from etl_worker.extract import predicate, read_arrow, select_sql, typed_value
from etl_worker.partition import PartitionKey
from tests.support.cli import IDENTITY, run_cli
from tests.support.data import audit_rows, scalar, table_difference
from tests.support.reliability import record
from tests.support.runs import wait_for_run_end
from tests.support.services import (
    BASE_BROKER_URL,
    Stack,
    Worker,
    create_database,
    drop_database,
)


@dataclass(frozen=True)
class TypeCase:
    """A partition column type, the partition values of its raw table (as SQL input text;
    None is the NULL partition) with the audit keys they must get, a `--zips` spelling that
    must become one of those keys, and values `--zips` must refuse."""

    name: str
    type_sql: str
    values: list[str | None]
    keys: set[str | None]
    accepted: tuple[str, str]
    refused: tuple[str, ...]


CASES = [
    TypeCase(
        "integer",
        "integer",
        ["1", "42", "-7", "2147483647", None],
        {"1", "42", "-7", "2147483647", None},
        ("0042", "42"),
        ("1.5", "99999999999"),
    ),
    TypeCase(
        "bigint",
        "bigint",
        ["1", "9223372036854775807", "-3", None],
        {"1", "9223372036854775807", "-3", None},
        ("+1", "1"),
        ("9223372036854775808", "x1"),
    ),
    # 10.5 and 10.500 are one value (=), so one partition, whatever their text.
    TypeCase(
        "numeric",
        "numeric",
        ["10.5", "10.500", "0", "-3.25", "123456789.123456789", None],
        {"10.5", "0", "-3.25", "123456789.123456789", None},
        ("010.5000", "10.5"),
        ("1.2.3", "ten"),
    ),
    TypeCase(
        "numeric_typmod",
        "numeric(10,2)",
        ["10.5", "0", "-3.25", "99999999.99", None],
        {"10.50", "0.00", "-3.25", "99999999.99", None},
        ("10.5", "10.50"),
        ("10.555", "1e20"),
    ),
    TypeCase(
        "date",
        "date",
        ["2024-01-01", "1970-01-01", "2024-02-29", None],
        {"2024-01-01", "1970-01-01", "2024-02-29", None},
        ("20240229", "2024-02-29"),
        ("2024-13-01", "2023-02-29"),
    ),
    TypeCase(
        "timestamp",
        "timestamp",
        [
            "2024-01-01 00:00:00",
            "2024-01-01 00:00:00.5",
            "2024-02-29 23:59:59.999999",
            "1999-12-31 23:59:59.123",
            None,
        ],
        {
            "2024-01-01 00:00:00",
            "2024-01-01 00:00:00.5",
            "2024-02-29 23:59:59.999999",
            "1999-12-31 23:59:59.123",
            None,
        },
        ("2024-01-01T00:00:00.000", "2024-01-01 00:00:00"),
        ("2024-01-01 25:00:00", "soon"),
    ),
    # Written with other offsets; named in UTC, whatever the database's TimeZone.
    TypeCase(
        "timestamptz",
        "timestamptz",
        ["2024-01-01 12:00:00+05:30", "2024-06-01 00:00:00.25-07", "2024-01-01 00:00:00+00", None],
        {"2024-01-01 06:30:00+00", "2024-06-01 07:00:00.25+00", "2024-01-01 00:00:00+00", None},
        ("2024-01-01 01:30:00+01:30", "2024-01-01 00:00:00+00"),
        ("2024-01-01 00:00:00+99", "noonish"),
    ),
    TypeCase(
        "uuid",
        "uuid",
        ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000000", None],
        {"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000000", None},
        ("A0EEBC999C0B4EF8BB6D6BB9BD380A11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ("a0eebc99", "not-a-uuid"),
    ),
    TypeCase(
        "boolean",
        "boolean",
        ["true", "false", None],
        {"true", "false", None},
        ("yes", "true"),
        ("maybe",),
    ),
    # Any text is a text value: nothing to refuse; '' and NULL are two partitions.
    TypeCase(
        "text",
        "text",
        ["a", "", "O'Brien", "01", "x y", None],
        {"a", "", "O'Brien", "01", "x y", None},
        ("01", "01"),
        (),
    ),
    TypeCase(
        "varchar",
        "varchar(5)",
        ["ab", "", "x y", "00", None],
        {"ab", "", "x y", "00", None},
        ("00", "00"),
        ("abcdefg",),
    ),
]

ROWS_PER_VALUE = 3


@pytest.fixture(scope="module")
def typed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One database whose session defaults differ from the tool's (DateStyle SQL/DMY, a
    +05:30 TimeZone, sql_standard intervals, extra_float_digits 0), so a key that followed
    the server's defaults would be written differently; and one worker on it."""
    url = create_database()
    tag = uuid.uuid4().hex[:10]
    stack = Stack(url, BASE_BROKER_URL, f"etltest-{tag}:", f"etl-{tag}")
    with psycopg.connect(url, autocommit=True) as conn:
        name = sql.Identifier(conn.info.dbname)
        for setting, value in [
            ("DateStyle", "SQL, DMY"),
            ("TimeZone", "Asia/Kolkata"),
            ("IntervalStyle", "sql_standard"),
            ("extra_float_digits", "0"),
        ]:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    name, sql.Identifier(setting), sql.Literal(value)
                )
            )
    worker = Worker(stack.env, tmp_path_factory.mktemp("typed") / "worker.log", concurrency=2)
    try:
        worker.wait_ready()
        yield stack
    finally:
        worker.stop()
        delete_redis_prefix(BASE_BROKER_URL, stack.prefix)
        drop_database(url)


def make_typed_table(url: str, case: TypeCase) -> str:
    """raw_<case> (id, part <type>, payload) with ROWS_PER_VALUE rows per value."""
    table = f"raw_{case.name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, part {}, payload text)"  # test-owned
            ).format(sql.Identifier(table), sql.SQL(case.type_sql))
        )
        rows = [
            (n * ROWS_PER_VALUE + i, value, f"row {n}.{i}")
            for n, value in enumerate(case.values)
            for i in range(ROWS_PER_VALUE)
        ]
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, CAST(%s AS {}), %s)").format(
                    sql.Identifier(table), sql.SQL(case.type_sql)
                ),
                rows,
            )
        conn.execute(sql.SQL("CREATE INDEX ON {} (part)").format(sql.Identifier(table)))
    return table


def settings_for(stack: Stack, case: TypeCase) -> Settings:
    return Settings.load(
        environ=stack.env,
        raw_table=f"raw_{case.name}",
        target_table=f"clean_{case.name}",
        partition_column="part",
        transform=IDENTITY,
    )


def run_count(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM etl.runs"))  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_partition_type_round_trips_and_zips_are_parsed_by_the_column_type(
    typed_stack: Stack, case: TypeCase
) -> None:
    url = typed_stack.database_url
    raw = make_typed_table(url, case)
    settings = settings_for(typed_stack, case)

    full = producer.enqueue_run(settings).run_id
    wait_for_run_end(url, full, timeout=120)

    rows = audit_rows(url, full)
    assert set(rows) == case.keys
    assert {r["state"] for r in rows.values()} == {"finished"}, rows
    lost, doubled = table_difference(url, raw, settings.target_table)
    assert (lost, doubled) == (0, 0)

    spelled, canonical = case.accepted
    again = producer.enqueue_run(settings, zips=[spelled]).run_id
    wait_for_run_end(url, again, timeout=120)

    rows = audit_rows(url, again)
    assert list(rows) == [canonical]
    assert rows[canonical]["state"] == "finished", rows
    assert rows[canonical]["rows_written"] == rows[canonical]["rows_read"] > 0
    assert table_difference(url, raw, settings.target_table) == (0, 0)

    type_shown = scalar(
        url,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attname = 'part'",
        (raw,),
    )
    where = f'column part ({type_shown}) of table "{raw}"'
    runs = run_count(url)
    for value in case.refused:
        with pytest.raises(ConfigError) as refused:
            producer.enqueue_run(settings, zips=[spelled, value])
        assert str(refused.value).startswith(f"--zips value {value!r} does not fit {where}: ")
    if case.refused:
        names = ["--raw-table", raw, "--partition-column", "part", "--transform", IDENTITY]
        value = case.refused[0]
        cli = run_cli("etl-enqueue", "--zips", f"{spelled},{value}", *names, env=typed_stack.env)
        assert cli.returncode == 1
        assert cli.stderr.startswith(f"error: --zips value {value!r} does not fit {where}: ")
        assert cli.stderr.count("\n") == 1 and cli.stdout == "", cli.stderr
    assert run_count(url) == runs  # nothing recorded for a refused value
    shown = ", ".join("NULL" if v is None else repr(v) for v in case.values)
    refused_text = (
        f"refused {' and '.join(repr(v) for v in case.refused)} in one line before anything "
        "was written"
        if case.refused
        else "nothing to refuse: any text is a value"
    )
    record(
        f"partition column of type {case.type_sql}",
        f"values {shown}; the database's DateStyle SQL, DMY and TimeZone Asia/Kolkata",
        f"every partition finished, named by Postgres's text of its value "
        f"({', '.join(sorted(repr(k) for k in case.keys if k is not None))}); "
        f"--zips {spelled!r} ran partition {canonical!r}; {refused_text}",
        rows_lost=lost,
        rows_doubled=doubled,
    )


def test_a_partition_without_rows_gets_its_typed_value_from_postgres(fresh_database: str) -> None:
    """The value a transform's output is checked against, when the partition has no raw
    rows to take it from, is the one its rows would have given."""
    url = fresh_database
    adbc = adbc_connect(url)
    try:
        with connect(url) as conn:
            bind = Audit(conn, "etl").bind
            for case in CASES:
                raw = make_typed_table(url, case)
                column = find_column(table_columns(conn, TableName(raw)), "part", TableName(raw))
                for key in case.keys - {None}:
                    part = PartitionKey(key)
                    where, params = predicate(part, column)
                    query = bind(select_sql(TableName(raw), where), params)
                    read = read_arrow(adbc, query, table_columns(conn, TableName(raw)))
                    empty = read.slice(0, 0)

                    from_rows = typed_value(adbc, bind, read, column, part)
                    from_cast = typed_value(adbc, bind, empty, column, part)

                    assert read.num_rows > 0
                    assert from_cast.as_py() == from_rows.as_py(), (case.name, key)
    finally:
        adbc.close()
