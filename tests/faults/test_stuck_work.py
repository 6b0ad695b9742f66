"""Work that gets stuck is bounded: a transform stuck holding the GIL keeps its lease (its
worker's main process renews it) and fails at the hard time limit, saying so; one stuck in
Python stops at the soft time limit, saying so; a worker frozen inside its write
transaction has it rolled back by Postgres, and its partition finishes elsewhere, once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import psycopg
import pytest

from etl_worker import deaths
from tests.support.cli import IDENTITY
from tests.support.data import audit_rows, make_raw_table
from tests.support.reliability import exactly_once
from tests.support.runs import rows_in_state, start_run, wait_for_run_end
from tests.support.services import Stack, Worker, wait_until
from tests.support.timings import LEASE_3S, short_timings
from tests.support.transforms import STUCK

pytestmark = pytest.mark.faults


def test_stuck_transforms_keep_their_lease_and_fail_at_the_time_limit_that_stopped_them(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=3, rows_per_zip=5)
    env = LEASE_3S | {"ETL_TEST_STUCK_IN_C": "00000", "ETL_TEST_STUCK_IN_PYTHON": "00001"}
    worker = start_worker(concurrency=3, **env)
    run_id = start_run(stack.env | LEASE_3S, "--all-zips", "--transform", STUCK)

    wait_for_run_end(url, run_id, timeout=90)

    rows = audit_rows(url, run_id)
    in_c, in_python = rows.pop("00000"), rows.pop("00001")
    assert {r["state"] for r in rows.values()} == {"finished"}
    # Neither was sent again while it was stuck: the main process kept the leases alive.
    for row in (in_c, in_python):
        assert row["state"] == "failed"
        assert (row["attempts"], row["requeues"]) == (1, 0)
    assert in_c["error"] == deaths.hard_time_limit_error("00000", 8)
    assert in_python["error"] == deaths.soft_time_limit_error("00001", 7, 8)
    assert "SoftTimeLimitExceeded" not in str(in_python["error"])
    assert (in_c["death_cause"], in_python["death_cause"]) == ("time_limit", None)
    assert "Hard time limit (8" in worker.log()
    expected = (
        "(SELECT * FROM raw_companies WHERE zip_code NOT IN ('00000', '00001') "
        "OR zip_code IS NULL) AS expected"
    )
    exactly_once(
        url,
        "transform stuck in C code holding the GIL; another stuck in Python",
        "sum(itertools.repeat(1, 10**13)) in the transform of one zip, time.sleep(3600) in "
        "another; ETL_LEASE_SECONDS=3, ETL_TASK_TIME_LIMIT=8",
        "the worker's main process kept both leases alive, so neither was sent again "
        "(attempts=1, requeues=0); the GIL-bound one failed at the hard time limit, the "
        "audit error saying so ('hit the hard time limit of 8s'), the other at the soft "
        "limit ('ran past the soft time limit of 7s'); no 'out of memory?' hint",
        expected=expected,
    )


#: The frozen writer's tests: the lease (3 s) is also how long Postgres lets a frozen
#: writer's transaction sit idle between statements; ETL_WRITE_TIMEOUT (4 s) how long one
#: of its statements may run or wait. The task limit is long enough for the frozen attempt
#: to get back to its write after SIGCONT.
FROZEN_TIMINGS = short_timings(
    lease=3, task_limit=30, ETL_WRITE_TIMEOUT="4", ETL_RETRY_BACKOFF_BASE="0.2"
)
#: The advisory lock the target's first DELETE waits on while the test holds it.
TRIGGER_LOCK = 4242


def hold_the_first_delete(url: str) -> None:
    """The target, made ahead of the run, with a statement trigger: the first DELETE on it
    (the first writer, inside its write transaction) waits while the test holds
    TRIGGER_LOCK; later ones pass (a sequence counts them, outside any transaction)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE clean_companies (LIKE raw_companies INCLUDING DEFAULTS)")
        conn.execute("CREATE SEQUENCE deletes_seen")
        conn.execute(
            "CREATE FUNCTION hold_first_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF nextval('deletes_seen') = 1 THEN "
            f"PERFORM pg_advisory_xact_lock_shared({TRIGGER_LOCK}); END IF; RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE TRIGGER hold_first_delete BEFORE DELETE ON clean_companies "
            "FOR EACH STATEMENT EXECUTE FUNCTION hold_first_delete()"
        )


def writer_held(session: psycopg.Connection) -> str | None:
    """The worker whose writer waits in the trigger (from its audit row), if one does."""
    row = session.execute(
        "SELECT p.worker FROM pg_stat_activity a, etl.partitions p WHERE a.wait_event = "
        "'advisory' AND a.query LIKE 'DELETE FROM%%' AND a.datname = current_database() "
        "AND p.state = 'started'"
    ).fetchone()
    return None if row is None else str(row[0])


@pytest.mark.parametrize("frozen_in", ["between_statements", "a_statement"])
def test_a_worker_frozen_inside_its_write_is_rolled_back_and_its_zip_finishes_elsewhere_once(
    stack: Stack, start_worker: Callable[..., Worker], frozen_in: str
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=2, rows_per_zip=5)
    hold_the_first_delete(url)
    nodes = {n: start_worker(concurrency=1, name=f"{n}@%h", **FROZEN_TIMINGS) for n in "ab"}
    with psycopg.connect(url, autocommit=True) as test_session:
        test_session.execute("SELECT pg_advisory_lock(%s)", (TRIGGER_LOCK,))
        run_id = start_run(stack.env | FROZEN_TIMINGS, "--zips", "00001", "--transform", IDENTITY)
        held = wait_until(
            lambda: writer_held(test_session),
            interval=0.02,
            what="a writer inside its write transaction",
        )
        victim = nodes[str(held).split("@")[0]]
        os.killpg(victim.pid, signal.SIGSTOP)  # the whole node: main process and pool
        froze = time.monotonic()
        first = audit_rows(url, run_id)["00001"]
        if frozen_in == "between_statements":
            # Its DELETE completes; frozen, it never sends the next statement.
            test_session.execute("SELECT pg_advisory_unlock(%s)", (TRIGGER_LOCK,))
        try:
            wait_until(
                lambda: rows_in_state(url, run_id, "finished"),
                timeout=60,
                what="zip 00001 to finish while its first writer is frozen",
            )
            recovered = time.monotonic() - froze
        finally:
            test_session.execute("SELECT pg_advisory_unlock_all()")
            os.killpg(victim.pid, signal.SIGCONT)
    done = audit_rows(url, run_id)["00001"]
    assert done["worker"] != first["worker"]
    assert (done["attempts"], done["requeues"]) == (2, 1)
    # Woken up inside a transaction Postgres has ended, the first attempt writes nothing;
    # its own delivery, retried, finds the zip finished.
    logs = lambda: "".join(node.log() for node in nodes.values())  # noqa: E731
    wait_until(
        lambda: f"[{first['task_id']}] retry" in logs(),
        timeout=60,
        what="the frozen attempt to give up after SIGCONT",
    )
    wait_until(
        lambda: "partition 00001 skipped" in logs(),
        timeout=60,
        what="its retried delivery to find the zip finished",
    )
    assert audit_rows(url, run_id)["00001"] == done
    where = (
        "a statement (its DELETE, waiting)" if frozen_in == "a_statement" else "between statements"
    )
    ended = (
        "cancelled its waiting DELETE after 4 s (lock_timeout = statement_timeout = "
        "ETL_WRITE_TIMEOUT), which aborted its transaction"
        if frozen_in == "a_statement"
        else "ended its transaction after 3 s idle (idle_in_transaction_session_timeout = "
        "ETL_LEASE_SECONDS)"
    )
    exactly_once(
        url,
        f"worker frozen inside its write transaction, in {where}",
        "SIGSTOP to a worker's process group while its DELETE waits in a test trigger"
        + (", released at once" if frozen_in != "a_statement" else "")
        + "; SIGCONT once its zip finished elsewhere",
        f"Postgres {ended}, freeing its locks; its "
        "lease lapsed (its main process was frozen too), a worker's own sweep sent the zip "
        "again and the other node wrote it (attempts=2); woken up, the frozen attempt wrote "
        "nothing and its retried delivery found the zip finished",
        recovery_seconds=recovered,
        expected="(SELECT * FROM raw_companies WHERE zip_code = '00001') AS expected",
    )
