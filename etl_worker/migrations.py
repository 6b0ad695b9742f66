"""The audit schema's versions: numbered migrations, applied in order, one transaction each.

`sql/migrations/NNNN_name.sql` moves the audit schema from version NNNN-1 to NNNN and is
recorded in `{schema}.schema_version` in the same transaction, so a migration is applied
whole or not at all, and exactly once. `etl-enqueue` and `etl-migrate` apply what is
missing, one process at a time (an advisory lock). Workers check the version on every claim
(the claim query carries it, at no extra round trip) and refuse to work against any version
but their code's: an older schema lacks what the code writes, a newer one may mean
something the code does not know.

Audit schemas made before migrations were numbered have no version table: they count as
version 0, and migrations 1 and 2 are written to be no-ops on what they already hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import psycopg
from psycopg import sql

from etl_worker.errors import AuditSchemaMismatch, AuditSchemaMissing

_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
#: Two migrating processes would race on every DDL statement: serialize them.
_LOCK = "etl-worker audit schema migration"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    def ddl(self, schema: str) -> sql.Composed:
        return sql.SQL(self.text).format(schema=sql.Identifier(schema))


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped with this code, in order (numbered 1, 2, ... without gaps)."""
    folder = resources.files("etl_worker").joinpath("sql", "migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"audit migrations are not numbered 1..n: {[m.version for m in found]}")
    return tuple(found)


def code_version() -> int:
    """The audit schema version this code reads and writes."""
    return migrations()[-1].version


def current_version(conn: psycopg.Connection, schema: str) -> int | None:
    """The audit schema's version: None when there is no audit schema at all, 0 when its
    tables predate numbered migrations."""
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
        (_qualified(schema, "schema_version"), _qualified(schema, "runs")),
    ).fetchone()
    assert row is not None
    has_versions, has_runs = row
    if not has_versions:
        return 0 if has_runs else None
    found = conn.execute(
        sql.SQL("SELECT max(version) FROM {}.schema_version").format(sql.Identifier(schema))
    ).fetchone()
    return int(found[0]) if found and found[0] is not None else 0


def migrate(conn: psycopg.Connection, schema: str) -> list[Migration]:
    """Apply every missing migration (autocommit connection). Returns those applied."""
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (_LOCK,))
    try:
        current = current_version(conn, schema) or 0
        if current > code_version():
            raise _too_new(schema, current, "etl-migrate")
        pending = [m for m in migrations() if m.version > current]
        for migration in pending:
            with conn.transaction():
                conn.execute(migration.ddl(schema))
                _record(conn, schema, migration)
        return pending
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_LOCK,))


def check_version(conn: psycopg.Connection, schema: str, who: str) -> int:
    """Raise unless the audit schema is at this code's version; `who` names the command
    in the message (e.g. 'etl-status')."""
    found = current_version(conn, schema)
    if found is None:
        raise schema_missing(conn, schema)
    return require_version(found, schema, who)


def require_schema(conn: psycopg.Connection, schema: str) -> int:
    """The audit schema's version; `AuditSchemaMissing` (one line: what to run) when the
    database has none. For the commands that only read it (etl-status, etl-report,
    etl-sweep): on a fresh database they have nothing to read, and say so."""
    found = current_version(conn, schema)
    if found is None:
        raise schema_missing(conn, schema)
    return found


def schema_missing(conn: psycopg.Connection, schema: str) -> AuditSchemaMissing:
    return AuditSchemaMissing(
        f'no audit schema "{schema}" in database "{conn.info.dbname}": run etl-enqueue or '
        "etl-migrate first — or check ETL_DATABASE_URL and ETL_AUDIT_SCHEMA"
    )


def require_version(found: int, schema: str, who: str) -> int:
    if found < code_version():
        raise AuditSchemaMismatch(
            f'audit schema "{schema}" is at version {found}, {who} needs {code_version()} '
            "— run etl-migrate (or etl-enqueue, which migrates) with this version of etl-worker"
        )
    if found > code_version():
        raise _too_new(schema, found, who)
    return found


def _too_new(schema: str, found: int, who: str) -> AuditSchemaMismatch:
    return AuditSchemaMismatch(
        f'audit schema "{schema}" is at version {found}, newer than this {who} '
        f"(version {code_version()}) — upgrade etl-worker here before using it on this database"
    )


def _record(conn: psycopg.Connection, schema: str, migration: Migration) -> None:
    ident = sql.Identifier(schema)
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(ident)
    )
    conn.execute(
        sql.SQL("INSERT INTO {}.schema_version (version, name) VALUES (%s, %s)").format(ident),
        (migration.version, migration.name),
    )


def _qualified(schema: str, table: str) -> str:
    """'"schema"."table"' for to_regclass, quoted as Postgres would quote it."""
    return '"' + schema.replace('"', '""') + '"."' + table + '"'
