"""Fingerprints: of the raw rows a partition reads, and of the code that turns them into the
rows written. `etl-enqueue --changed-since` (incremental.py) skips a partition when both
match its last finished run.

The raw fingerprint is computed by Postgres, never by pulling rows to the client: the row
count, and the sum (as numeric, so it cannot overflow) of a 64-bit hash of each row's text
(`hashtextextended(row::text, 0)`). A sum is order-independent and additive: one GROUP BY
pass over the raw table gives every partition's fingerprint, and a split partition's
fingerprint can sit on its first task (the others count 0).

The producer takes it at enqueue, for every partition of an `--all-zips` run, in that one
pass, and records it on the partitions' audit rows. Taken before any task reads its rows, it
is safe: a change in between makes the recorded fingerprint older than the rows written, so
the next incremental run sees a change and reruns the partition (taken after the read, it
could record a change that was never written). One pass costs about what the COPY read
floor does (BENCHMARKS.md); a statement per partition in the workers, tried first, cost
several times that in total (an index scan per partition, on top of the task's own read).

An update, insert or delete changes the sum (unless two different rows hash alike: 1 in
2^64). Row text is the same on every connection because db.SESSION_OPTIONS fixes the
settings it depends on (TimeZone, DateStyle, extra_float_digits).

The code fingerprint hashes the source of the modules that decide the rows written: the
transform's and, when the run has one, the contract's, plus the run's quarantine table.
(A module the transform imports is not hashed: change the transform's own module, or its
name, to force a rerun.) The lead may point `code_fingerprint` at the transform fingerprint
of issue 11 §7 (w11d's fingerprint.py) when both land.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from etl_worker.db import Column, TableName
from etl_worker.errors import ConfigError
from etl_worker.partition import key_text

#: The alias of the raw table in fingerprint queries; `ROW(alias.*)` is the whole row
#: even when the table has a column of the alias's name.
_ROW = sql.Identifier("_etl_row")


@dataclass(frozen=True)
class RawFingerprint:
    rows: int
    hash: Decimal

    @classmethod
    def of(cls, row: Any) -> RawFingerprint:
        return cls(int(row[0]), Decimal(row[1]))


def _aggregates() -> sql.Composed:
    return sql.SQL(
        "count(*), coalesce(sum(hashtextextended(ROW({}.*)::text, 0)::numeric), 0)"
    ).format(_ROW)


def all_fingerprints(
    conn: psycopg.Connection, raw: TableName, column: Column
) -> dict[str | None, RawFingerprint]:
    """Every partition's fingerprint in one pass over the raw table (GROUP BY the
    partition value's text, the key the audit rows carry; NULL is a partition too)."""
    col = sql.SQL("{}.{}").format(_ROW, sql.Identifier(column.name))
    query = sql.SQL("SELECT {}, {} FROM {} AS {} GROUP BY 1").format(
        key_text(column, col), _aggregates(), raw.ident, _ROW
    )
    return {row[0]: RawFingerprint.of(row[1:]) for row in conn.execute(query)}


@functools.cache
def _module_source(module_name: str) -> str:
    try:
        return inspect.getsource(importlib.import_module(module_name))
    except (OSError, TypeError):  # no source on disk (a compiled or built-in module)
        return ""


def code_fingerprint(transform: str, contract: str = "", quarantine: str = "") -> str:
    """A hash of the code that decides a partition's output: the transform's name and its
    module's source, the contract's likewise, and the quarantine table. Cached per process
    (the source as first seen, which is what the process imported)."""
    digest = hashlib.sha256()
    for spec in (transform, contract):
        if not spec:
            digest.update(b"\0")
            continue
        module_name = spec.partition(":")[0]
        if not module_name:
            raise ConfigError(f"not 'module:name': {spec!r}")
        digest.update(spec.encode() + b"\0" + _module_source(module_name).encode() + b"\0")
    digest.update(quarantine.encode())
    return digest.hexdigest()[:16]
