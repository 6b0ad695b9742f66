"""The database goes away: sessions terminated mid-run, and a whole cluster restarted (the
test's own, never the shared one). Tasks retry with backoff and finish; an observer reading
the target all along never sees a zip half-written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from tests.support.cli import IDENTITY
from tests.support.data import audit_rows, make_raw_table, table_difference
from tests.support.reliability import exactly_once
from tests.support.runs import SLOW, start_run, wait_for_run_end
from tests.support.servers import PostgresCluster
from tests.support.services import Stack, Worker, wait_until

pytestmark = pytest.mark.faults

RETRY_FAST = {
    "ETL_RETRY_BACKOFF_BASE": "0.2",
    "ETL_RETRY_BACKOFF_MAX": "2",
    "ETL_MAX_RETRIES": "20",
    "ETL_TEST_SLEEP": "0.5",
}
OBSERVER = "etl-test-observer"


class TargetObserver:
    """Reads every zip's row count in the target, over and over, from its own session, and
    remembers any count that is not the zip's full count: a half-written (or doubled) zip
    would show up here. Reconnects when the database drops it."""

    def __init__(self, url: str, expected: dict[str | None, int]) -> None:
        self.url = url
        self.expected = expected
        self.reads = 0
        self.wrong: list[tuple[str | None, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TargetObserver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.url, application_name=OBSERVER, connect_timeout=2, autocommit=True
                ) as conn:
                    while not self._stop.is_set():
                        counts = dict(
                            conn.execute(
                                "SELECT zip_code, count(*) FROM clean_companies GROUP BY 1"
                            ).fetchall()
                        )
                        self.reads += 1
                        for key, n in self.expected.items():
                            if counts.get(key, 0) != n:
                                self.wrong.append((key, counts.get(key, 0)))
                        time.sleep(0.02)
            except psycopg.OperationalError:
                time.sleep(0.1)  # the database is restarting: read again when it is back


def zip_counts(url: str) -> dict[str | None, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT zip_code, count(*) FROM raw_companies GROUP BY 1").fetchall()
    return {k: n for k, n in rows}


def terminate_worker_sessions(url: str) -> int:
    """pg_terminate_backend on every other session of this database but the observer's."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name <> %s",
            (OBSERVER,),
        ).fetchall()
    return len(rows)


def second_run_under(
    url: str,
    env: dict[str, str],
    inject: Callable[[str], object],
) -> tuple[str, float, TargetObserver]:
    """Fill the target with a first run, then run every zip again (slowly) while `inject`
    does its damage and an observer watches the target. Returns the run id, the seconds from
    the end of the injection to the end of the run, and the observer."""
    first = start_run(env, "--all-zips", "--transform", IDENTITY)
    wait_for_run_end(url, first)
    assert table_difference(url, "raw_companies", "clean_companies") == (0, 0)
    with TargetObserver(url, zip_counts(url)) as observer:
        run_id = start_run(env, "--all-zips", "--transform", SLOW)
        inject(run_id)
        injected = time.monotonic()
        ended = wait_for_run_end(url, run_id, timeout=180)
    return run_id, ended - injected, observer


def started_some(url: str, run_id: str) -> bool:
    rows = audit_rows(url, run_id)
    return any(r["state"] == "started" for r in rows.values())


def test_terminated_database_sessions_retry_with_backoff_and_never_show_a_half_written_zip(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=8, rows_per_zip=5)
    env = stack.env | RETRY_FAST
    start_worker(concurrency=2, **env)
    terminated = []

    def terminate_repeatedly(run_id: str) -> None:
        for _ in range(4):  # while zips are in their transform, holding idle connections
            wait_until(lambda: started_some(url, run_id), timeout=60, what="a running zip")
            terminated.append(terminate_worker_sessions(url))
            time.sleep(0.7)

    run_id, recovered, observer = second_run_under(url, env, terminate_repeatedly)

    rows = audit_rows(url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    assert sum(terminated) >= 4
    assert sum(int(r["retries"]) for r in rows.values()) >= 1  # some write found its session dead
    assert observer.reads > 10 and observer.wrong == []  # never a partial or doubled zip
    exactly_once(
        url,
        "Postgres drops the workers' connections",
        f"pg_terminate_backend on every worker session, 4 times mid-run ({sum(terminated)} "
        "sessions)",
        f"affected zips retried with backoff ({sum(int(r['retries']) for r in rows.values())} "
        f"retries) and finished; an observer reading the target {observer.reads} times never "
        "saw a zip with other than its full row count",
        recovery_seconds=recovered,
    )


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    server = PostgresCluster()
    try:
        yield server
    finally:
        server.stop()


def test_a_database_restart_mid_run_is_retried_and_never_shows_a_half_written_zip(
    stack: Stack, start_worker: Callable[..., Worker], cluster: PostgresCluster
) -> None:
    url = cluster.url()
    make_raw_table(url, zips=8, rows_per_zip=5)
    env = stack.env | RETRY_FAST | {"ETL_DATABASE_URL": url}
    worker = start_worker(concurrency=2, **env)

    def restart(run_id: str) -> None:
        wait_until(lambda: started_some(url, run_id), timeout=60, what="a running zip")
        cluster.restart()  # immediate shutdown (every session cut), crash recovery, start

    run_id, recovered, observer = second_run_under(url, env, restart)

    rows = audit_rows(url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    assert "database connection lost" in worker.log()  # the restart did hit running zips
    # ... and each recorded its retry once the database was back, giving its lease back:
    # no retried delivery had to wait out a lease of the attempt before it.
    assert "leased by" not in worker.log()
    assert observer.reads > 10 and observer.wrong == []
    exactly_once(
        url,
        "Postgres restarts mid-run",
        "pg_ctl stop -m immediate + start on the test's own cluster while zips run",
        "tasks that lost their session retried with backoff once it was back and finished; "
        f"an observer reading the target {observer.reads} times never saw a partial zip",
        recovery_seconds=recovered,
    )
