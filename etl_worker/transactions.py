"""Statements and transactions on the ADBC connection with the fewest round trips.

On small partitions round trips are most of the time, and each statement ADBC prepares,
describes and wraps in `COPY ... TO STDOUT` costs three of them and two parses on the one
Postgres of the fleet (docs/scaling.md counts them). These two send what needs no result
as simple queries, and let a transaction's BEGIN and COMMIT travel with its statements.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def adbc_run(adbc_cursor: Any, statement: str) -> int:
    """Run one statement whose result rows are not needed (values already bound) on an ADBC
    cursor, in one round trip: sent as a simple query. `cursor.execute` would take three
    (prepare, describe, then the statement wrapped in `COPY ... TO STDOUT`), and Postgres
    would parse and plan it twice. Returns the rows affected (-1: unknown)."""
    adbc_cursor.adbc_statement.set_sql_query(statement)
    return int(adbc_cursor.adbc_statement.execute_update())


@contextmanager
def explicit_transaction(adbc_conn: Any) -> Iterator[Any]:
    """A cursor for one transaction whose BEGIN and COMMIT the caller sends itself, each in
    the simple query of a neighbouring statement: `adbc_run(cur, "BEGIN; " + first)`, then
    `adbc_run(cur, last + "; COMMIT")` — no round trip of their own. The connection is in
    autocommit meanwhile, so the ADBC driver sends no BEGIN of its own either (it sends one
    again after every `adbc_ingest` otherwise: a round trip and a warning inside the open
    transaction). On an exception a ROLLBACK is sent (a lost connection ends the
    transaction anyway); the connection is left in autocommit off, as it was found."""
    adbc_conn.rollback()  # nothing open (no round trip when idle)
    adbc_conn.adbc_connection.set_autocommit(True)
    cur = adbc_conn.cursor()
    try:
        yield cur
    except BaseException:
        try:
            adbc_run(cur, "ROLLBACK")
        except Exception:  # the connection is gone: so is its transaction
            pass
        raise
    finally:
        cur.close()
        adbc_conn.adbc_connection.set_autocommit(False)
