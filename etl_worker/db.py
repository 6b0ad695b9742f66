"""Database connections, identifier quoting, catalog look-ups, and what driver errors mean.

Two drivers, each for what it does best:
- psycopg 3 for control SQL (audit rows, DDL, catalog queries) and identifier quoting;
- ADBC (`adbc_driver_postgresql`) for the data path: it reads a query result with binary
  COPY straight into Arrow and writes Arrow back with binary COPY, in C++.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from etl_worker import defaults
from etl_worker.errors import (
    ColumnNotFound,
    ConfigError,
    EtlError,
    PartitionDataError,
    ServiceUnavailable,
    StatementTimedOut,
    TableNotFound,
    TransientError,
)
from etl_worker.network import libpq_parameters
from etl_worker.urls import check_database_url, redact_url

APPLICATION_NAME = "etl-worker"

#: Session settings of every connection this tool opens (both drivers, the heartbeat's
#: too). A partition is named in the audit table by Postgres's own text of its value
#: (`col::text`) and found again by parsing that text: a producer and a worker whose roles
#: or servers default to another DateStyle, TimeZone or IntervalStyle would write and read
#: a date, timestamptz or interval key differently (`29/02/2024` is not a date under MDY)
#: and name one partition two ways. Fixed here, the text depends on the value only.
SESSION_OPTIONS = (
    "-c DateStyle=ISO,MDY -c TimeZone=UTC -c IntervalStyle=postgres -c extra_float_digits=3"
)

# SQLSTATEs a retry can fix: connection exceptions (class 08), serialization failure,
# deadlock, admin/crash shutdown, cannot connect now, too many connections.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "57P01", "57P02", "57P03", "53300"}
# A statement cancelled (statement_timeout, a cancel request) or a lock wait past
# lock_timeout: transient too, and told apart so the error can name the timeout.
_TIMEOUT_SQLSTATES = {"57014", "55P03"}
# Classes that mean the data itself is wrong for the target: data exception (22),
# integrity constraint violation (23). Retrying these cannot help.
_DATA_SQLSTATE_CLASSES = {"22", "23"}


def conninfo(url: str, network_timeout: float, **overrides: Any) -> str:
    """The libpq conninfo for `url` with the keepalive and timeout parameters that give up
    on a silent server within `network_timeout` (network.py), except those the URL sets
    itself (an operator's explicit choice wins), then `overrides`; and SESSION_OPTIONS after
    any options of the URL's own (ours win: they decide a partition value's text)."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        # libpq's message quotes the string, password and all: say it the way Settings does.
        check_database_url(url, "the database URL")
        raise ConfigError("the database URL does not parse — check ETL_DATABASE_URL") from None
    params: dict[str, Any] = {
        k: v for k, v in libpq_parameters(network_timeout).items() if k not in given
    }
    own = given.get("options")
    params["options"] = f"{own} {SESSION_OPTIONS}" if own else SESSION_OPTIONS
    return make_conninfo(url, **(params | overrides))


def connect(
    url: str,
    *,
    autocommit: bool = True,
    connect_timeout: int | None = None,
    network_timeout: float = defaults.NETWORK_TIMEOUT,
) -> psycopg.Connection:
    """A psycopg connection that gives up on a silent server within `network_timeout`; a
    clear `ServiceUnavailable` when nothing answers."""
    overrides: dict[str, Any] = {"application_name": APPLICATION_NAME}
    if connect_timeout is not None:
        overrides["connect_timeout"] = connect_timeout
    try:
        return psycopg.connect(conninfo(url, network_timeout, **overrides), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise ServiceUnavailable(
            f"cannot connect to Postgres at {redact_url(url)}: {redact_url(first_line(exc))} "
            "— check ETL_DATABASE_URL and that the server is running"
        ) from exc


def adbc_connect(url: str, *, network_timeout: float = defaults.NETWORK_TIMEOUT) -> Any:
    """An ADBC DB-API connection (autocommit off) for reading and writing partitions. ADBC
    hands the conninfo to libpq, so it takes the same keepalive and timeout parameters."""
    import adbc_driver_postgresql.dbapi as adbc

    try:
        return adbc.connect(conninfo(url, network_timeout))
    except adbc.Error as exc:
        raise ServiceUnavailable(
            f"cannot connect to Postgres at {redact_url(url)}: {redact_url(first_line(exc))}"
        ) from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def with_database(url: str, dbname: str) -> str:
    """The same server's connection string pointing at another database, in the same form
    (a URL stays a URL: the benchmark hands it to SQLAlchemy)."""
    if "://" not in url:
        return make_conninfo(url, dbname=dbname)
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))


def database_name(url: str) -> str:
    name = conninfo_to_dict(url).get("dbname")
    if not name:
        raise ConfigError(f"no database name in {redact_url(url)}")
    return str(name)


def ensure_database(url: str) -> bool:
    """Create the database named in `url` when it does not exist. True when created."""
    name = database_name(url)
    with connect(with_database(url, "postgres")) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:  # another process won the race
            return False
        return True


@dataclass(frozen=True)
class TableName:
    """A table name as the user wrote it: `table` or `schema.table`, quoted when used."""

    name: str
    schema: str | None = None

    @classmethod
    def parse(cls, text: str) -> TableName:
        parts = text.split(".")
        if len(parts) == 1 and parts[0]:
            return cls(parts[0])
        if len(parts) == 2 and all(parts):
            return cls(parts[1], parts[0])
        raise ConfigError(f"not a table name: {text!r} (use table or schema.table)")

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name) if self.schema else sql.Identifier(self.name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    def with_suffix(self, suffix: str) -> TableName:
        """The name of a companion table in the same schema: raw -> raw_sample."""
        return TableName(self.name + suffix, self.schema)


_TYPE_MODIFIERS = re.compile(r"\((-?\d+(?:,\s*-?\d+)*)\)")


@dataclass(frozen=True)
class Column:
    name: str
    #: Type as Postgres prints it, with modifiers: `numeric(14,2)`, `character varying(20)`.
    type_sql: str
    #: Schema and internal name of the type, for a quoted cast: "pg_catalog"."int4".
    type_schema: str
    type_name: str
    not_null: bool

    @property
    def type_ident(self) -> sql.Identifier:
        return sql.Identifier(self.type_schema, self.type_name)

    @property
    def type_modifiers(self) -> tuple[int, ...]:
        """The type's modifiers as written in `type_sql`: (14, 2) for numeric(14,2), (20,)
        for character varying(20), () for none."""
        found = _TYPE_MODIFIERS.search(self.type_sql)
        return tuple(int(m) for m in found[1].split(",")) if found else ()

    @property
    def full_type(self) -> sql.Composable:
        """The type with its modifiers (`"pg_catalog"."numeric"(14, 2)`), for a cast that
        gives a value exactly as the column stores it (rounded to its scale, say)."""
        if not self.type_modifiers:
            return self.type_ident
        modifiers = sql.SQL(", ").join(sql.Literal(m) for m in self.type_modifiers)
        return sql.SQL("{}({})").format(self.type_ident, modifiers)


def database_label(conn: psycopg.Connection) -> str:
    return str(conn.info.dbname)


def table_columns(conn: psycopg.Connection, table: TableName) -> list[Column]:
    """The table's columns in order; `TableNotFound` with a hint when it does not exist."""
    oid = conn.execute("SELECT to_regclass(%s)::oid", (table.ident.as_string(conn),)).fetchone()
    if oid is None or oid[0] is None:
        raise TableNotFound(
            f'table "{table}" not found in database "{database_label(conn)}" '
            "— check the table name (--raw-table/--target-table) or ETL_DATABASE_URL"
        )
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), n.nspname, t.typname,
               a.attnotnull
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = a.atttypid
        JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (oid[0],),
    ).fetchall()
    return [Column(*row) for row in rows]


def table_exists(conn: psycopg.Connection, table: TableName) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (table.ident.as_string(conn),)).fetchone()
    return row is not None and row[0] is not None


def resolve_schema(conn: psycopg.Connection, table: TableName) -> TableName:
    """The table with the schema the search path finds it in (`clean_companies` ->
    `public.clean_companies`); as given when qualified already or not found. ADBC needs it:
    its ingest and schema look-up put an unqualified name in current_schema(), the first
    schema on the path that exists, not the first that holds the table. With a user named
    like a schema (user `etl`, audit schema `etl`: "$user" comes before public) the two
    differ."""
    if table.schema is not None:
        return table
    row = conn.execute(
        """
        SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = to_regclass(%s)
        """,
        (table.ident.as_string(conn),),
    ).fetchone()
    return table if row is None else TableName(table.name, row[0])


def schema_exists(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT to_regnamespace(%s)", (sql.Identifier(name).as_string(conn),))
    value = row.fetchone()
    return value is not None and value[0] is not None


def find_column(columns: list[Column], name: str, table: TableName) -> Column:
    for column in columns:
        if column.name == name:
            return column
    known = ", ".join(c.name for c in columns)
    raise ColumnNotFound(
        f'column "{name}" not found in table "{table}" (its columns: {known}) '
        "— check --partition-column"
    )


def primary_key(conn: psycopg.Connection, table: TableName) -> list[str]:
    """The columns of the table's primary key, in key order (empty when it has none)."""
    rows = conn.execute(
        """
        SELECT a.attname
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = to_regclass(%s) AND i.indisprimary
        ORDER BY k.n
        """,
        (table.ident.as_string(conn),),
    ).fetchall()
    return [row[0] for row in rows]


def table_comment(conn: psycopg.Connection, table: TableName) -> str | None:
    row = conn.execute(
        "SELECT obj_description(to_regclass(%s), 'pg_class')", (table.ident.as_string(conn),)
    ).fetchone()
    return None if row is None else row[0]


def has_index_on(conn: psycopg.Connection, table: TableName, column: str) -> bool:
    """True when some valid index of `table` starts with `column` (usable for `col = value`)."""
    row = conn.execute(
        """
        SELECT 1 FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = to_regclass(%s) AND a.attname = %s AND i.indisvalid
        LIMIT 1
        """,
        (table.ident.as_string(conn), column),
    ).fetchone()
    return row is not None


def create_partition_index(conn: psycopg.Connection, table: TableName, column: str) -> bool:
    """Index `table (column)` unless a valid index already starts with the column. True when
    it built one. CONCURRENTLY, so the table stays writable during the build; that needs an
    autocommit connection (it cannot run inside a transaction)."""
    if has_index_on(conn, table, column):
        return False
    name = f"{table.name}_{column}_idx"[:63]
    conn.execute(
        sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(name), table.ident, sql.Identifier(column)
        )
    )
    if not has_index_on(conn, table, column):
        # IF NOT EXISTS kept an index of that name that an interrupted build left invalid.
        index = TableName(name, table.schema).ident.as_string(conn)
        raise EtlError(
            f'index {index} on "{table}" exists but is not valid (an earlier build was '
            f"interrupted) — run DROP INDEX CONCURRENTLY {index}; and try again"
        )
    return True


def sqlstate_of(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    if state is None:
        diag = getattr(exc, "diag", None)
        state = getattr(diag, "sqlstate", None)
    return state if isinstance(state, str) else None


def database_error(exc: BaseException) -> TransientError | PartitionDataError | None:
    """What a driver error means for a partition, by its SQLSTATE or class: a
    `TransientError` (a retry may fix it) or a `PartitionDataError` (the data is wrong for
    the target); None when it is not such a driver error. The policy around it is
    `retry.classify`."""
    state = sqlstate_of(exc)
    if state is not None:
        if state in _TIMEOUT_SQLSTATES:
            return StatementTimedOut(f"database error {state}: {first_line(exc)}")
        if state in _TRANSIENT_SQLSTATES or state.startswith("08"):
            return TransientError(f"database error {state}: {first_line(exc)}")
        if state[:2] in _DATA_SQLSTATE_CLASSES:
            return PartitionDataError(f"the target rejected a value: {first_line(exc)}")
    if isinstance(exc, psycopg.OperationalError | ConnectionError | TimeoutError):
        return TransientError(f"database connection lost: {first_line(exc)}")
    try:
        import adbc_driver_manager

        if isinstance(exc, adbc_driver_manager.OperationalError):
            return TransientError(f"database connection lost: {first_line(exc)}")
        if isinstance(exc, adbc_driver_manager.DataError):
            return PartitionDataError(f"the target rejected a value: {first_line(exc)}")
    except ImportError:  # pragma: no cover - adbc is a hard dependency
        pass
    return None
