"""Issue 12, reading a run: --json as one document, error kinds grouped without their
values, full tracebacks in etl-report, elapsed after a resume, and etl-status --list. The
installed commands, real workers, Postgres and Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.support.cli import enqueue, run_cli, run_json
from tests.support.data import make_raw_table
from tests.support.services import Stack, Worker

VALUES = "tests.support.transforms:fail_with_a_value_on_poisoned_zips"


def test_a_run_read_back_after_failures_and_a_resume_hours_later(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    make_raw_table(stack.database_url, zips=6, rows_per_zip=3)  # 8 partitions
    poison = tmp_path / "poison.txt"
    poison.write_text("00001\n00002\n00004\n")
    start_worker(concurrency=2, ETL_TEST_POISON_FILE=str(poison))

    waited = enqueue(stack, "--all-zips", "--wait", "--json", "--transform", VALUES, check=False)

    # --json: stdout is one JSON document, the run id inside (for `| jq`).
    assert waited.returncode == 1, waited.stderr
    document = json.loads(waited.stdout)
    run_id = document["run_id"]
    assert run_id in waited.stderr
    # Float value 1.5, 2.5 and 4.5 are one kind of error.
    [(kind, zips)] = document["failures_by_error"].items()
    assert kind.endswith("ValueError: Float value <n> was truncated converting to int64"), kind
    assert zips == ["00001", "00002", "00004"]
    tracebacks = [f["traceback"] for f in document["failures"]]
    assert all(
        "Traceback (most recent call last)" in t and "_reject_value" in t for t in tracebacks
    )

    # etl-report shows the traceback the one-line error leaves out.
    report = tmp_path / "report.html"
    run_cli("etl-report", run_id, "--html", str(report), env=stack.env, check=True)
    html = report.read_text()
    assert "Traceback (most recent call last)" in html and "_reject_value" in html

    # The first run happened an hour ago; the resume runs now. Elapsed and throughput
    # measure the work, not the hour in between.
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE etl.partitions SET started_at = started_at - interval '1 hour', "
            "finished_at = finished_at - interval '1 hour', "
            "queued_at = queued_at - interval '1 hour' WHERE run_id = %s",
            (run_id,),
        )
    poison.unlink()
    enqueue(stack, "--resume", run_id, "--wait")
    status = run_json(stack, run_id)
    assert status["complete"] and status["states"]["failed"] == 0
    assert 0 < status["elapsed_seconds"] < 600, status["elapsed_seconds"]
    assert status["rows_per_second"] > status["rows_read"] / 600

    # --list: the run, its state and counts, as text and as JSON.
    second = enqueue(stack, "--zips", "00003", "--transform", VALUES).stdout.split()[0]
    listed = run_cli("etl-status", "--list", env=stack.env, check=True).stdout.splitlines()
    assert listed[0].split()[:4] == ["run", "tables", "transform", "state"]
    assert listed[1].startswith(second) and listed[2].startswith(run_id)
    assert "raw_companies -> " in listed[2]
    assert " complete " in listed[2] and " 8/8 " in listed[2]
    runs = json.loads(run_cli("etl-status", "--list", "--json", env=stack.env, check=True).stdout)
    assert [r["run_id"] for r in runs] == [second, run_id]
    assert runs[1]["state"] == "complete" and runs[1]["total"] == runs[1]["finished"] == 8
    assert runs[1]["transform"] == VALUES and runs[1]["elapsed_seconds"] < 600


def test_json_without_wait_and_test_flags_without_test_are_usage_errors(stack: Stack) -> None:
    make_raw_table(stack.database_url, zips=2, rows_per_zip=2)

    for args, words in [
        (["--all-zips", "--json"], "--json prints the final status: it needs --wait (or --test)"),
        (
            ["--all-zips", "--truth-table", "truth"],
            "--truth-table only means something with --test",
        ),
    ]:
        result = enqueue(stack, *args, check=False)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [f"error: {words} — see etl-enqueue --help"]
        assert stack.queued() == 0
