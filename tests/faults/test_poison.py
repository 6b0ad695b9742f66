"""Poison zips: a transform that raises on one zip, and a value the target refuses on
another. Each fails alone with its error in the audit table, the target keeps the zip's
previous rows, the run finishes everything else, and --resume retries just those two."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.support.cli import IDENTITY, run_cli
from tests.support.data import audit_rows, make_raw_table
from tests.support.rabbit import BOTH_BROKERS
from tests.support.reliability import exactly_once, record
from tests.support.runs import WaitingProducer, start_run, wait_for_run_end
from tests.support.services import Stack, Worker

pytestmark = pytest.mark.faults

POISON = "tests.support.transforms:fail_on_poisoned_zips"


def snapshot(url: str, zips: list[str]) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT * FROM clean_companies WHERE zip_code = ANY(%s) ORDER BY id", (zips,)
        ).fetchall()


@BOTH_BROKERS
def test_poison_zips_fail_alone_keep_their_previous_rows_and_resume_retries_just_them(
    stack: Stack,
    start_worker: Callable[..., Worker],
    enqueue_and_wait: Callable[..., WaitingProducer],
    tmp_path: Path,
) -> None:
    url = stack.database_url
    make_raw_table(url, zips=6, rows_per_zip=5)
    poison = tmp_path / "poison.txt"
    start_worker(concurrency=2, ETL_TEST_POISON_FILE=str(poison))
    first = start_run(stack.env, "--all-zips", "--transform", IDENTITY)
    wait_for_run_end(url, first)
    before = snapshot(url, ["00002", "00003"])
    assert len(before) == 10

    # The data goes bad: one zip makes the transform raise, another carries a value the
    # target's CHECK constraint refuses.
    poison.write_text("00002\n")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE clean_companies ADD CONSTRAINT employees_not_negative "
            "CHECK (employees >= 0)"
        )
        conn.execute("UPDATE raw_companies SET employees = -1 WHERE id = (SELECT min(id) "
                     "FROM raw_companies WHERE zip_code = '00003')")  # fmt: skip
    producer = enqueue_and_wait("--all-zips", "--transform", POISON)
    assert producer.wait(120) == 1, producer.stderr()  # --wait exits 1: some zips failed
    run_id, out = producer.run_id, producer.stdout()

    rows = audit_rows(url, run_id)
    raised, refused = rows.pop("00002"), rows.pop("00003")
    assert {r["state"] for r in rows.values()} == {"finished"}  # the run did everything else
    assert raised["state"] == "failed" and raised["attempts"] == 1
    assert raised["error"] == (
        f"transform {POISON} failed on partition 00002: "
        "ValueError: cannot parse revenue for zip 00002"
    )
    assert refused["state"] == "failed" and refused["attempts"] == 1
    assert str(refused["error"]).startswith("the target rejected a value: ")
    assert 'violates check constraint "employees_not_negative"' in str(refused["error"])
    assert "2 partition(s) failed" in out and f"etl-enqueue --resume {run_id}" in out
    assert snapshot(url, ["00002", "00003"]) == before  # previous rows kept, untouched

    failed_run = audit_rows(url, run_id)
    poison.unlink()  # the data is fixed: resume sends just the two failed zips
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE raw_companies SET employees = 1 WHERE employees = -1")
    resumed = run_cli("etl-enqueue", "--resume", run_id, "--wait", env=stack.env)

    assert resumed.returncode == 0, resumed.stderr
    assert "re-enqueued 2 partitions" in resumed.stderr
    after = audit_rows(url, run_id)
    assert {r["state"] for r in after.values()} == {"finished"}
    resent = {k for k in after if after[k]["task_id"] != failed_run[k]["task_id"]}
    assert resent == {"00002", "00003"}  # the others were not sent again
    lost, doubled = exactly_once(
        url,
        "poison zip: the transform raises",
        "transform raises ValueError on one zip",
        "that zip failed on its first attempt with the exception in the audit error, its "
        "previous target rows kept; the run finished the rest; --resume retried just it",
    )
    record(
        "poison zip: a value the target refuses",
        "CHECK (employees >= 0) on the target, -1 in one raw row",
        "that zip failed with 'the target rejected a value: ... violates check constraint', "
        "its previous rows kept (one transaction); --resume retried just it once fixed",
        rows_lost=lost,
        rows_doubled=doubled,
    )
