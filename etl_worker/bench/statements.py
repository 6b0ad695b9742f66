"""Where Postgres' time goes, statement by statement (`pg_stat_statements`).

Reset before a line, read after it: each statement's calls, execution time, rows and WAL
bytes, grouped into kinds a reader can act on (the read, the write, the DELETE, each audit
query by its name in sql/queries.sql, the advisory lock, transaction control, catalog
look-ups). Needs the extension in `shared_preload_libraries`: the benchmark's own cluster
loads it; on a shared server it is used only when already loaded.

ADBC runs every query that returns rows as `COPY (query) TO STDOUT (FORMAT binary)`, so the
query inside the COPY is what decides the kind. Postgres 15 keeps a utility statement
(COPY) under its text, constants and all: one entry per partition, hence a large
`pg_stat_statements.max` in the cluster (cluster.py) and the count of evicted entries in the
result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg

from etl_worker.queries import named_queries

_COPY_OUT = re.compile(r"^\s*copy\s*\((.*)\)\s*to\s+stdout", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"--[^\n]*")
#: Constants as pg_stat_statements replaces them with $n (NULL, true, false too), and psycopg's
#: placeholders: gone from both sides before comparing words.
_LITERAL = re.compile(
    r"'(?:[^']|'')*'|%\(\w+\)s|\$\d+|\b\d+(?:\.\d+)?(?:e[-+]?\d+)?\b|\b(?:null|true|false)\b"
)
#: `extract(epoch FROM x)`: Postgres takes the field for a constant, which
#: pg_stat_statements replaces with $n like any other.
_EXTRACT_FIELD = re.compile(r"(?<=\bextract\()\s*[a-z_]+(?=\s+from\b)")
_WORD = re.compile(r"[a-z_][a-z0-9_]*")
_TRANSACTION = ("begin", "commit", "rollback", "start transaction", "end")
#: What drivers and run set-up ask: catalog tables, name look-ups, SHOW.
_CATALOG = re.compile(
    r'\bfrom\s+"?pg_catalog"?\.|\bfrom\s+pg_|to_regclass\(|current_schema\(|version\(\)|^show\s'
)


def _words(text: str) -> tuple[str, ...]:
    text = _LITERAL.sub(" ", _EXTRACT_FIELD.sub(" ", _COMMENT.sub(" ", text.lower())))
    return tuple(_WORD.findall(text))


@dataclass(frozen=True)
class Classifier:
    """Names a statement's kind; audit queries by their name in sql/queries.sql."""

    audit_schema: str
    _named: dict[tuple[str, ...], str] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        quoted = f'"{self.audit_schema}"'
        for name, body in named_queries().items():
            self._named[_words(body.replace("{schema}", quoted))] = name

    def kind(self, text: str) -> str:
        lowered = text.strip().lower()
        inner = _COPY_OUT.match(lowered)
        query = inner.group(1) if inner else lowered
        if "pg_advisory" in query:
            return "advisory lock"
        if lowered.startswith("copy") and "from stdin" in lowered:
            return "write: COPY FROM STDIN"
        name = self._named.get(_words(query))
        if name is not None:
            return f"audit: {name}"
        if query.startswith("delete"):
            return "DELETE the partition's old rows"
        if query.startswith(("insert", "update")):
            return query.split(None, 1)[0].upper()
        if query.startswith(_TRANSACTION):
            return "BEGIN / COMMIT / ROLLBACK"
        if _CATALOG.search(query):
            return "driver and run set-up (catalog, SHOW)"
        if inner:
            return "read: COPY (SELECT …) TO STDOUT"
        if query.startswith("select"):
            return "read: SELECT (rows as tuples)"
        return "other: " + " ".join(query.split())[:60]


@dataclass
class StatementKind:
    kind: str
    calls: int = 0
    exec_ms: float = 0.0
    rows: int = 0
    wal_bytes: int = 0


@dataclass
class Statements:
    """One line's statements by kind, most time first; `evicted`: entries pg_stat_statements
    dropped for want of room (their numbers are missing)."""

    kinds: list[StatementKind]
    evicted: int = 0

    @property
    def exec_ms(self) -> float:
        return sum(k.exec_ms for k in self.kinds)

    @property
    def calls(self) -> int:
        return sum(k.calls for k in self.kinds)


def available(conn: psycopg.Connection) -> bool:
    """pg_stat_statements is loaded (then its view is created in this database)."""
    row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    if row is None or "pg_stat_statements" not in str(row[0]):
        return False
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return True


def reset(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_stat_statements_reset()")


def _evicted(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT dealloc FROM pg_stat_statements_info").fetchone()
    return int(row[0]) if row else 0


def collect(conn: psycopg.Connection, classifier: Classifier) -> Statements:
    """This database's statements since the last reset, by kind (the monitor's own
    queries left out)."""
    rows = conn.execute(
        "SELECT query, calls, total_exec_time, rows, wal_bytes FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND query NOT LIKE '%%pg_stat_statements%%' AND query NOT LIKE '%%pg_stat_activity%%'"
    ).fetchall()
    kinds: dict[str, StatementKind] = {}
    for text, calls, exec_ms, count, wal in rows:
        kind = classifier.kind(text)
        entry = kinds.setdefault(kind, StatementKind(kind))
        entry.calls += int(calls)
        entry.exec_ms += float(exec_ms)
        entry.rows += int(count)
        entry.wal_bytes += int(wal or 0)
    ordered = sorted(kinds.values(), key=lambda k: -k.exec_ms)
    return Statements(ordered, _evicted(conn))
