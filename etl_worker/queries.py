"""Named SQL queries from `sql/queries.sql`, bound to the audit schema's quoted name."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from psycopg import sql

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _sql_text(filename: str) -> str:
    return resources.files("etl_worker").joinpath("sql", filename).read_text()


@cache
def _named(filename: str) -> dict[str, str]:
    text = _sql_text(filename)
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def named_queries() -> dict[str, str]:
    """Every named query's text, `{schema}` unbound (the benchmark names statements by it)."""
    return dict(_named("queries.sql"))


@cache
def query(name: str, schema: str) -> sql.Composed:
    """The named query from queries.sql with {schema} bound to the quoted audit schema."""
    try:
        body = _named("queries.sql")[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/queries.sql") from None
    return sql.SQL(body).format(schema=sql.Identifier(schema))
