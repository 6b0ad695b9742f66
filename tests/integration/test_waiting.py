"""Commands that wait: a run of no partitions ends at once, a --wait in a log prints lines,
Ctrl-C says how to come back, `--wait RUN_ID` and `etl-status RUN_ID --wait` come back
(exit code and all), `--watch` exits like --wait, and `--resume` of a run still going sends
nothing still on its way. Console scripts as subprocesses against real services."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.support.cli import IDENTITY, command_path, enqueue, run_cli
from tests.support.data import RAW_DDL, audit_rows, make_raw_table
from tests.support.services import Stack, Worker, wait_until

POISON = "tests.support.transforms:fail_on_poisoned_zips"
GATE = "tests.support.transforms:wait_for_gate"


def test_wait_on_a_run_of_no_partitions_ends_at_once_complete(stack: Stack) -> None:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute(RAW_DDL.format(table="raw_companies"))  # test-owned DDL, no rows
    started = time.monotonic()
    result = enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY, check=False)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    assert "enqueued 0 partitions" in result.stderr
    assert "progress   0/0 partitions (100.0%)  complete" in result.stdout


def test_a_wait_without_a_terminal_prints_a_progress_line_every_few_seconds(
    stack: Stack, start_worker: Callable[..., Worker], gate: Path, tmp_path: Path
) -> None:
    make_raw_table(stack.database_url, zips=2)  # 4 partitions
    start_worker(concurrency=1)
    log = tmp_path / "wait.log"
    with open(log, "w") as stderr:
        waiting = subprocess.Popen(
            [command_path("etl-enqueue"), "--all-zips", "--wait", "--transform", GATE],
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            wait_until(
                lambda: len(re.findall(r"partitions 0/4 \(0\.0%\)", log.read_text())) >= 3,
                timeout=30,
                interval=0.5,
                what="three progress lines while the gate is closed",
            )
            gate.unlink()
            out, _ = waiting.communicate(timeout=120)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
    assert waiting.returncode == 0
    assert "partitions 4/4 (100.0%)" in log.read_text()
    assert "complete" in out


def test_ctrl_c_says_how_to_reattach_and_both_reattach_commands_wait_sweep_and_exit_like_wait(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    make_raw_table(stack.database_url, zips=3)  # 5 partitions
    poison = tmp_path / "poison.txt"
    poison.write_text("00001\n")
    waiting = subprocess.Popen(
        [command_path("etl-enqueue"), "--all-zips", "--wait", "--transform", POISON],
        env=stack.env | {"ETL_TEST_POISON_FILE": str(poison)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiting.stdout is not None
    run_id = waiting.stdout.readline().strip()
    time.sleep(2)  # in its wait loop (no worker yet: nothing can finish)
    waiting.send_signal(signal.SIGINT)
    _, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 130
    assert f"follow it again with: etl-status {run_id} --wait" in err

    start_worker(concurrency=2, ETL_TEST_POISON_FILE=str(poison), ETL_MAX_RETRIES="0")
    again = run_cli("etl-enqueue", "--wait", run_id, env=stack.env, timeout=120)
    assert again.returncode == 1, again.stderr  # 00001 failed, as --wait would say
    assert again.stdout.splitlines()[0] == run_id
    assert "progress   5/5 partitions" in again.stdout
    status = run_cli("etl-status", run_id, "--wait", env=stack.env, timeout=120)
    assert status.returncode == 1, status.stderr
    assert "failures   1 partition(s) failed" in status.stdout
    # Following a run is all RUN_ID does: anything else with it is an error, not ignored.
    refused = run_cli("etl-enqueue", run_id, env=stack.env)
    assert refused.returncode == 2 and "etl-enqueue --wait RUN_ID" in refused.stderr


def test_status_watch_exits_non_zero_when_the_run_ended_with_failures(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    make_raw_table(stack.database_url, zips=2)
    poison = tmp_path / "poison.txt"
    poison.write_text("00000\n")
    start_worker(concurrency=2, ETL_TEST_POISON_FILE=str(poison), ETL_MAX_RETRIES="0")
    run_id = enqueue(stack, "--all-zips", "--transform", POISON).stdout.split()[0]
    watch = run_cli("etl-status", run_id, "--watch", "--interval", "0.3", env=stack.env)
    assert watch.returncode == 1, watch.stderr
    assert "failures   1 partition(s) failed" in watch.stdout


def test_resume_of_a_run_still_going_sends_nothing_still_queued_or_running(
    stack: Stack, start_worker: Callable[..., Worker], gate: Path
) -> None:
    make_raw_table(stack.database_url, zips=4)  # 6 partitions
    run_id = enqueue(stack, "--all-zips", "--transform", GATE).stdout.split()[0]
    assert stack.queued() == 6
    start_worker(concurrency=2)  # two partitions start and wait at the gate
    wait_until(
        lambda: (
            sum(r["state"] == "started" for r in audit_rows(stack.database_url, run_id).values())
            == 2
        ),
        timeout=60,
        what="two partitions running",
    )
    task_ids = {k: r["task_id"] for k, r in audit_rows(stack.database_url, run_id).items()}

    resumed = enqueue(stack, "--resume", run_id)

    assert "re-enqueued 0 partitions" in resumed.stderr
    assert "4 partition(s) whose message is still queued, 2 running" in resumed.stderr
    assert stack.queued() == 4  # not one duplicate
    assert {k: r["task_id"] for k, r in audit_rows(stack.database_url, run_id).items()} == (
        task_ids
    )
    gate.unlink()
    done = run_cli("etl-status", run_id, "--wait", env=stack.env, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = audit_rows(stack.database_url, run_id)
    assert {r["state"] for r in rows.values()} == {"finished"}
    assert all(r["attempts"] == 1 for r in rows.values())
