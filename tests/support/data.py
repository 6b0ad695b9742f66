"""Small raw tables with every awkward value the pipeline must carry exactly."""

from __future__ import annotations

from typing import Any

import psycopg

AWKWARD_TEXTS = [
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "back\\slash",
    "\\N",
    "single ' and double \" quotes",
    "unicode é 中文 😀",
    "",
    None,
    "comma, semicolon; pipe|",
]

RAW_DDL = """
CREATE TABLE {table} (
    id           bigint PRIMARY KEY,
    zip_code     text,
    company_name text,
    notes        text,
    employees    integer,
    revenue      numeric(14,2),
    latitude     double precision,
    founded_date date,
    updated_at   timestamptz
)
"""


def make_raw_table(
    url: str, *, table: str = "raw_companies", zips: int = 12, rows_per_zip: int = 7
) -> int:
    """A raw table with `zips` leading-zero zip codes plus a NULL and an '' partition, and
    every awkward value in AWKWARD_TEXTS. Returns the row count."""
    rows = []
    keys: list[str | None] = [f"{i:05d}" for i in range(zips)] + [None, ""]
    n = 0
    for key in keys:
        for j in range(rows_per_zip):
            n += 1
            rows.append(
                (
                    n,
                    key,
                    f"  Company {n} ",
                    AWKWARD_TEXTS[n % len(AWKWARD_TEXTS)],
                    None if n % 4 == 0 else n * 3,
                    None if n % 5 == 0 else f"{n * 1234.5:.2f}",
                    None if n % 6 == 0 else 40.712776123456 + n / 1e9,
                    None if n % 7 == 0 else f"19{n % 100:02d}-0{1 + j % 9}-1{j % 10}",
                    f"2024-01-0{1 + j % 9} 12:34:56.789012+00",
                )
            )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RAW_DDL.format(table=table))  # test-owned DDL
        with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(f"CREATE INDEX ON {table} (zip_code)")
    return n


def table_difference(url: str, left: str, right: str) -> tuple[int, int]:
    """(rows of left missing from right, rows of right not in left), as multisets."""
    with psycopg.connect(url) as conn:
        missing = conn.execute(
            f"SELECT count(*) FROM (SELECT * FROM {left} EXCEPT ALL SELECT * FROM {right}) d"  # noqa: S608
        ).fetchone()
        extra = conn.execute(
            f"SELECT count(*) FROM (SELECT * FROM {right} EXCEPT ALL SELECT * FROM {left}) d"  # noqa: S608
        ).fetchone()
    assert missing is not None and extra is not None
    return int(missing[0]), int(extra[0])


def rows(url: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(query, params).fetchall()]  # type: ignore[arg-type]


def scalar(url: str, query: str, params: tuple[object, ...] = ()) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return None if row is None else row[0]


def count_partitions(url: str, state: str) -> int:
    """Audit rows (any run) in `state`: queued, started, retrying, finished or failed."""
    query = "SELECT count(*) FROM etl.partitions WHERE state::text = %s"
    return int(scalar(url, query, (state,)))  # type: ignore[arg-type]


def audit_rows(url: str, run_id: str) -> dict[str | None, dict[str, object]]:
    """The run's audit rows keyed by partition value (None is the NULL partition)."""
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            """
            SELECT part_key, state::text AS state, attempts, retries, task_id, worker,
                   lease_owner, error, death_cause, requeues, requeue_reason, rows_read,
                   rows_written
            FROM etl.partitions WHERE run_id = %s
            """,
            (run_id,),
        )
        names = [d.name for d in cur.description or ()]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return {row["part_key"]: row for row in rows}  # type: ignore[misc]
