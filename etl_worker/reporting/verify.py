"""Compare a test run's output with a source-of-truth table: rows missing, rows extra, and
rows changed, per column, paired by a key column.

Only the truth's rows in the sampled zips are expected (the truth may be the output of a
whole run). Values are compared with `IS DISTINCT FROM`, so NULL equals NULL and nothing
else; columns whose types differ between the two tables are compared as text, and said so.
Both sides are copied into temporary tables first, so each question is a short query on
small tables, and the user's tables are read once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from etl_worker.db import (
    Column,
    TableName,
    find_column,
    first_line,
    primary_key,
    table_columns,
)
from etl_worker.errors import ConfigError, EtlError
from etl_worker.partition import partition_label

#: Examples kept for each kind of difference.
EXAMPLES = 3
#: Changed values printed per column, so that one line stays readable.
SHOWN_PER_COLUMN = 2

_EXPECTED = sql.Identifier("etl_verify_expected")
_ACTUAL = sql.Identifier("etl_verify_actual")


@dataclass
class ColumnDiff:
    column: str
    rows: int
    #: (key, truth value, output value) as text.
    examples: list[tuple[str, str | None, str | None]] = field(default_factory=list)


@dataclass
class TableDiff:
    """How the output table differs from the truth on the sampled zips."""

    actual: str
    expected: str
    key: str
    zips: int
    expected_rows: int
    actual_rows: int
    missing: int = 0
    extra: int = 0
    changed: int = 0
    #: (key, zip) of a few missing / extra rows.
    missing_examples: list[tuple[str, str | None]] = field(default_factory=list)
    extra_examples: list[tuple[str, str | None]] = field(default_factory=list)
    columns: list[ColumnDiff] = field(default_factory=list)
    #: Rows sharing a key with another row, per side: the key cannot pair them.
    duplicate_keys: tuple[int, int] = (0, 0)
    #: Columns only one side has.
    missing_columns: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return (
            self.missing
            + self.extra
            + self.changed
            + sum(self.duplicate_keys)
            + len(self.missing_columns)
            + len(self.extra_columns)
        )

    @property
    def matches(self) -> bool:
        return self.differences == 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"differences": self.differences, "matches": self.matches}


def choose_key(conn: psycopg.Connection, truth: TableName, key: str = "") -> str:
    """The column that pairs rows: `key` if given, else the truth's one-column primary key,
    else `id`."""
    columns = table_columns(conn, truth)
    if key:
        return find_column(columns, key, truth).name
    pk = primary_key(conn, truth)
    if len(pk) == 1:
        return pk[0]
    if any(c.name == "id" for c in columns):
        return "id"
    raise ConfigError(
        f'truth table "{truth}" has no one-column primary key and no id column: name the '
        "column that identifies a row with --key (ETL_KEY_COLUMN)"
    )


def compare_tables(
    conn: psycopg.Connection,
    *,
    actual: TableName,
    expected: TableName,
    key: str,
    partition_column: str,
    zips_from: TableName,
) -> TableDiff:
    """Compare `actual` with the rows of `expected` whose partition value is one of
    `zips_from`'s (the sample table's)."""
    expected_columns = table_columns(conn, expected)
    actual_columns = table_columns(conn, actual)
    for table, columns in ((expected, expected_columns), (actual, actual_columns)):
        find_column(columns, key, table)
    find_column(expected_columns, partition_column, expected)
    try:
        with conn.transaction():
            _load_sides(conn, actual, expected, partition_column, zips_from)
            diff = _compare(
                conn, actual, expected, key, partition_column, expected_columns, actual_columns
            )
            diff.zips = _count(conn, zips_from.ident, distinct=partition_column)
            return diff
    except psycopg.Error as exc:
        raise EtlError(
            f'cannot compare "{actual}" with truth table "{expected}": {first_line(exc)}'
        ) from exc


def _load_sides(
    conn: psycopg.Connection,
    actual: TableName,
    expected: TableName,
    partition_column: str,
    zips_from: TableName,
) -> None:
    # The join (not IS NOT DISTINCT FROM) lets Postgres use an index of a big truth table;
    # the NULL zip, which no join matches, is added by the second branch.
    conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE {exp} ON COMMIT DROP AS
            SELECT t.* FROM {truth} t
            JOIN (SELECT DISTINCT {p} AS zip FROM {zips} WHERE {p} IS NOT NULL) s ON t.{p} = s.zip
            UNION ALL
            SELECT t.* FROM {truth} t
            WHERE t.{p} IS NULL AND EXISTS (SELECT 1 FROM {zips} WHERE {p} IS NULL)
            """
        ).format(
            exp=_EXPECTED,
            truth=expected.ident,
            zips=zips_from.ident,
            p=sql.Identifier(partition_column),
        )
    )
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT * FROM {}").format(
            _ACTUAL, actual.ident
        )
    )


def _compare(
    conn: psycopg.Connection,
    actual: TableName,
    expected: TableName,
    key: str,
    partition_column: str,
    expected_columns: list[Column],
    actual_columns: list[Column],
) -> TableDiff:
    k = sql.Identifier(key)
    actual_types = {c.name: c.type_sql for c in actual_columns}
    shared = [c for c in expected_columns if c.name in actual_types and c.name != key]
    diff = TableDiff(
        actual=str(actual),
        expected=str(expected),
        key=key,
        zips=0,
        expected_rows=_count(conn, _EXPECTED),
        actual_rows=_count(conn, _ACTUAL),
        missing_columns=[c.name for c in expected_columns if c.name not in actual_types],
        extra_columns=[
            c.name for c in actual_columns if c.name not in {e.name for e in expected_columns}
        ],
    )
    differs: list[sql.Composable] = []
    for column in shared:
        if column.type_sql == actual_types[column.name]:
            differs.append(
                sql.SQL("e.{c} IS DISTINCT FROM a.{c}").format(c=sql.Identifier(column.name))
            )
        else:
            differs.append(
                sql.SQL("e.{c}::text IS DISTINCT FROM a.{c}::text").format(
                    c=sql.Identifier(column.name)
                )
            )
            diff.notes.append(
                f"column {column.name} is {column.type_sql} in the truth and "
                f"{actual_types[column.name]} in the output: compared as text"
            )
    paired = sql.SQL("e.{k} IS NOT NULL AND a.{k} IS NOT NULL").format(k=k)
    any_differs = sql.SQL(" OR ").join(differs) if differs else sql.SQL("false")
    counts = [
        sql.SQL("count(*) FILTER (WHERE a.{k} IS NULL)").format(k=k),
        sql.SQL("count(*) FILTER (WHERE e.{k} IS NULL)").format(k=k),
        sql.SQL("count(*) FILTER (WHERE {} AND ({}))").format(paired, any_differs),
        *(sql.SQL("count(*) FILTER (WHERE {} AND {})").format(paired, d) for d in differs),
    ]
    row = conn.execute(
        sql.SQL("SELECT {} FROM {} e FULL JOIN {} a ON a.{k} = e.{k}").format(
            sql.SQL(", ").join(counts), _EXPECTED, _ACTUAL, k=k
        )
    ).fetchone()
    assert row is not None  # an aggregate returns one row
    diff.missing, diff.extra, diff.changed = int(row[0]), int(row[1]), int(row[2])
    # The zip of each unpaired row shown (the truth has the column: it was joined on).
    partition = partition_column if partition_column in actual_types else None
    diff.duplicate_keys = (_duplicates(conn, _EXPECTED, k), _duplicates(conn, _ACTUAL, k))
    if diff.missing:
        diff.missing_examples = _unpaired(conn, _EXPECTED, _ACTUAL, k, partition)
    if diff.extra:
        diff.extra_examples = _unpaired(conn, _ACTUAL, _EXPECTED, k, partition)
    for column, differ, rows in zip(shared, differs, row[3:], strict=True):
        if rows:
            diff.columns.append(
                ColumnDiff(column.name, int(rows), _changed(conn, k, column.name, differ))
            )
    return diff


def _count(conn: psycopg.Connection, table: sql.Identifier, distinct: str | None = None) -> int:
    """Rows of `table`, or its distinct values of column `distinct` (NULL counting as one)."""
    source: sql.Composable = table
    if distinct:
        source = sql.SQL("(SELECT DISTINCT {} FROM {}) d").format(sql.Identifier(distinct), table)
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(source)).fetchone()
    return int(row[0]) if row else 0


def _duplicates(conn: psycopg.Connection, table: sql.Identifier, k: sql.Identifier) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) - count(DISTINCT {k}) FROM {t}").format(k=k, t=table)
    ).fetchone()
    return int(row[0]) if row else 0


def _unpaired(
    conn: psycopg.Connection,
    side: sql.Identifier,
    other: sql.Identifier,
    k: sql.Identifier,
    partition: str | None,
) -> list[tuple[str, str | None]]:
    """A few keys of `side` that `other` lacks, with their zips."""
    zip_text = (
        sql.SQL("s.{}::text").format(sql.Identifier(partition)) if partition else sql.SQL("NULL")
    )
    rows = conn.execute(
        sql.SQL(
            "SELECT s.{k}::text, {z} FROM {side} s "
            "WHERE NOT EXISTS (SELECT 1 FROM {other} o WHERE o.{k} = s.{k}) "
            "ORDER BY s.{k} LIMIT {n}"
        ).format(k=k, z=zip_text, side=side, other=other, n=sql.Literal(EXAMPLES))
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _changed(
    conn: psycopg.Connection, k: sql.Identifier, column: str, differs: sql.Composable
) -> list[tuple[str, str | None, str | None]]:
    c = sql.Identifier(column)
    rows = conn.execute(
        sql.SQL(
            "SELECT e.{k}::text, e.{c}::text, a.{c}::text FROM {exp} e JOIN {act} a "
            "ON a.{k} = e.{k} WHERE {differs} ORDER BY e.{k} LIMIT {n}"
        ).format(k=k, c=c, exp=_EXPECTED, act=_ACTUAL, differs=differs, n=sql.Literal(EXAMPLES))
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def _plural(n: int, word: str = "row") -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _value(text: str | None, width: int = 32) -> str:
    if text is None:
        return "NULL"
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def format_diff(diff: TableDiff) -> str:
    """The short diff report etl-enqueue --test prints."""
    d = diff
    lines = [
        f"compare  {d.actual} with truth {d.expected} on {_plural(d.zips, 'zip')}, key {d.key}",
        f"rows     truth {d.expected_rows:,}  output {d.actual_rows:,}",
    ]
    if d.missing_columns or d.extra_columns:
        lines.append(
            f"columns  missing from the output: {', '.join(d.missing_columns) or '-'}; "
            f"extra in the output: {', '.join(d.extra_columns) or '-'}"
        )
    for label, count, examples, where in (
        ("missing", d.missing, d.missing_examples, "in the truth, not in the output"),
        ("extra", d.extra, d.extra_examples, "in the output, not in the truth"),
    ):
        line = f"{label:<8} {_plural(count)}"
        if count:
            shown = ", ".join(f"{d.key} {key} (zip {partition_label(z)})" for key, z in examples)
            line += f" {where}: {shown}" + (" ..." if count > len(examples) else "")
        lines.append(line)
    lines.append(f"changed  {_plural(d.changed)}" + (":" if d.changed else ""))
    for column in d.columns:
        shown = "; ".join(
            f"{d.key} {key}: truth {_value(t)}, output {_value(o)}"
            for key, t, o in column.examples[:SHOWN_PER_COLUMN]
        )
        lines.append(f"  {column.column:<14} {_plural(column.rows):>10}  {shown}")
    expected_dups, actual_dups = d.duplicate_keys
    if expected_dups or actual_dups:
        lines.append(
            f"doubled  {d.key} repeats in {_plural(expected_dups)} of the truth and "
            f"{_plural(actual_dups)} of the output"
        )
    lines.extend(f"note     {note}" for note in d.notes)
    if d.matches:
        lines.append(f"MATCH    all {d.expected_rows:,} rows equal in every column")
    else:
        lines.append(
            f"DIFFERENT  {_plural(d.differences, 'difference')} between the output and {d.expected}"
        )
    return "\n".join(lines)
