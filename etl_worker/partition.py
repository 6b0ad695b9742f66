"""What one partition task works on, and how every message, log line and report names it.

A partition is the rows whose partition column equals one value (or IS NULL); a big one is
split into sub-tasks that each take a half-open range [lo, hi) of the split column
(splits.py). `partition_label` is the one way to print either.

The value travels as text (in the audit row, the message, the lock key): `key_text` is
that text, computed by Postgres, one text per value of any column type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

from etl_worker.arrowtypes import is_numeric, numeric_typmod
from etl_worker.db import Column

#: Values printed as they are; anything else is quoted, so that no value can be mistaken
#: for the NULL partition, for another value, or for the range that may follow it.
_BARE = re.compile(r"[\w.-]+")


def partition_label(value: str | None, lo: int | None = None, hi: int | None = None) -> str:
    """A partition's name: `10016`, `NULL` for the NULL partition, the value quoted when
    printing it bare could mislead (`''`, `'NULL'`, `'a b'`), then the split's range
    if any: `10016[0,5000)`, with an open end left empty (`10016[,5000)`)."""
    if value is None:
        base = "NULL"
    elif _BARE.fullmatch(value) and value.upper() != "NULL":
        base = value
    else:
        base = repr(value)
    if lo is None and hi is None:
        return base
    return f"{base}[{'' if lo is None else lo},{'' if hi is None else hi})"


def key_text(column: Column, value: sql.Composable) -> sql.Composable:
    """SQL for the text that names the partition of `value` (an expression of the column's
    type): Postgres's own text of the value (under db.SESSION_OPTIONS, so the same for every
    connection), with a bare numeric's trailing zeros trimmed: 10.5 = 10.500 is one
    partition (`col = value` matches both), so it must have one name."""
    if is_numeric(column) and numeric_typmod(column) is None:
        return sql.SQL("trim_scale({})::text").format(value)
    return sql.SQL("{}::text").format(value)


@dataclass(frozen=True)
class PartitionKey:
    """One task's share of the table: rows whose partition column equals `value` (IS NULL
    when `value` is None), optionally only those with `split_column` in [lo, hi)."""

    value: str | None
    split_lo: int | None = None
    split_hi: int | None = None

    @property
    def label(self) -> str:
        return partition_label(self.value, self.split_lo, self.split_hi)
