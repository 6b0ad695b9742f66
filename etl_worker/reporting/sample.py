"""Sample raw tables for test mode: N zips drawn reproducibly from the raw table, with every
one of their rows (`etl-sample`), and the rule that guards every table test mode replaces.

The draw depends only on the raw table's set of zips and the seed: the same table and seed
give the same sample on any machine, so a test run can be repeated after a change to the
transform and compared like for like.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from etl_worker.config import Settings
from etl_worker.db import (
    TableName,
    connect,
    find_column,
    table_columns,
    table_comment,
    table_exists,
)
from etl_worker.errors import ConfigError, EtlError
from etl_worker.partition import partition_label
from etl_worker.producer import list_partitions

SAMPLE_SUFFIX = "_sample"
#: Every table test mode makes carries a comment starting with this; a table without it is
#: never dropped, whatever name it was given.
SCRATCH_MARK = "made by etl-worker"


@dataclass(frozen=True)
class Sample:
    table: str
    raw_table: str
    zips: list[str | None]
    #: Distinct zips in the raw table (the sample's population).
    population: int
    rows: int
    seed: int

    def summary(self) -> str:
        shown = ", ".join(partition_label(z) for z in self.zips[:10])
        more = f" and {len(self.zips) - 10} more" if len(self.zips) > 10 else ""
        return (
            f"sampled {len(self.zips):,} of {self.population:,} zips of {self.raw_table} "
            f"(seed {self.seed}) into {self.table}: {self.rows:,} rows; zips {shown}{more}"
        )


def sample_table_name(settings: Settings) -> TableName:
    """ETL_SAMPLE_TABLE, or `<raw table>_sample`."""
    if settings.sample_table:
        return TableName.parse(settings.sample_table)
    return TableName.parse(settings.raw_table).with_suffix(SAMPLE_SUFFIX)


def choose_zips(keys: Sequence[str | None], count: int, seed: int) -> list[str | None]:
    """`count` of `keys` drawn with `seed`, in a stable order; all of them if there are fewer.

    The keys are put in one canonical order first (NULL first), so the draw does not depend
    on the order the database listed them in.
    """
    ordered = sorted(keys, key=lambda k: (k is not None, k or ""))
    if count >= len(ordered):
        return ordered
    chosen = random.Random(seed).sample(ordered, count)
    return sorted(chosen, key=lambda k: (k is not None, k or ""))


def drop_scratch_table(
    conn: psycopg.Connection, table: TableName, protected: Sequence[str]
) -> None:
    """Drop `table` if it exists and test mode made it. Refuses the tables named in
    `protected` (the raw and real target tables) and any table without our mark."""
    if str(table) in protected:
        raise ConfigError(
            f'test mode will not replace table "{table}": it is the raw or the real target '
            "table — choose another --sample-table"
        )
    if not table_exists(conn, table):
        return
    comment = table_comment(conn, table) or ""
    if not comment.startswith(SCRATCH_MARK):
        raise EtlError(
            f'table "{table}" exists and was not made by etl-sample or etl-enqueue --test, so '
            "it is left alone — drop it yourself or choose another name"
        )
    conn.execute(sql.SQL("DROP TABLE {}").format(table.ident))


def mark_scratch_table(conn: psycopg.Connection, table: TableName, what: str) -> None:
    conn.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            table.ident, sql.Literal(f"{SCRATCH_MARK} ({what})")
        )
    )


def make_sample(settings: Settings, *, zips: int, seed: int) -> Sample:
    """Replace the sample table with every row of `zips` zips drawn from the raw table."""
    if zips < 1:
        raise ConfigError("--zips must be at least 1")
    raw = TableName.parse(settings.raw_table)
    target = sample_table_name(settings)
    with connect(settings.database_url) as conn:
        column = find_column(table_columns(conn, raw), settings.partition_column, raw)
        population = list_partitions(conn, raw, column)
        chosen = choose_zips(population, zips, seed)
        values = [z for z in chosen if z is not None]
        where = sql.SQL("{col} = ANY(CAST(%(keys)s AS {type}[]))").format(
            col=sql.Identifier(column.name), type=column.type_ident
        )
        if None in chosen:
            where = sql.SQL("({} OR {} IS NULL)").format(where, sql.Identifier(column.name))
        with conn.transaction():
            drop_scratch_table(conn, target, protected=[str(raw), settings.target_table])
            # INCLUDING ALL: the sample keeps the raw table's keys and indexes, so a run
            # over it is planned like a run over the raw table.
            conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(target.ident, raw.ident)
            )
            rows = conn.execute(
                sql.SQL("INSERT INTO {} SELECT * FROM {} WHERE {}").format(
                    target.ident, raw.ident, where
                ),
                {"keys": values},
            ).rowcount
            mark_scratch_table(
                conn, target, f"etl-sample: {len(chosen)} zips of {raw}, seed {seed}"
            )
        conn.execute(sql.SQL("ANALYZE {}").format(target.ident))
    return Sample(str(target), str(raw), chosen, len(population), rows, seed)
