"""The transform that runs is the one the run asked for (issue 11, §7): workers whose loaded
transform is not the version the run recorded refuse its partitions, once per worker and
run, without counting an attempt; workers import only modules on the allow-list."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.support.cli import IDENTITY, enqueue, run_cli, run_json
from tests.support.data import make_raw_table, scalar, table_difference
from tests.support.reliability import exactly_once, record
from tests.support.services import Stack, Worker, wait_until
from tests.support.timings import short_timings

BROKEN = """
import pandas as pd

def clean(df: pd.DataFrame) -> pd.DataFrame:
    if len(df):
        raise ValueError("version one is broken")
    return df
"""
FIXED = """
import pandas as pd

def clean(df: pd.DataFrame) -> pd.DataFrame:
    return df  # fixed
"""
# Importing it leaves a trace: which program imported it.
TRACED = """
import sys
from pathlib import Path

with open(Path(__file__).with_suffix(".imported"), "a") as trace:
    trace.write(sys.argv[0] + "\\n")

def clean(df):
    return df
"""


def user_module(stack: Stack, tmp_path: Path, source: str) -> tuple[str, Path]:
    """A transform module of the user's in its own directory on PYTHONPATH, allowed."""
    folder = tmp_path / "mods"
    folder.mkdir(exist_ok=True)
    name = f"user_transform_{uuid.uuid4().hex[:8]}"
    path = folder / f"{name}.py"
    path.write_text(source)
    stack.extra["PYTHONPATH"] = str(folder)
    stack.extra["ETL_TRANSFORM_MODULES"] = f"tests.support.transforms,{name}"
    return name, path


def partitions(stack: Stack, run_id: str) -> list[tuple[str, int, str | None]]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT state::text, attempts, transform_fingerprint FROM etl.partitions "
            "WHERE run_id = %s",
            (run_id,),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def run_fingerprint(stack: Stack, run_id: str) -> str:
    value = scalar(
        stack.database_url,
        "SELECT transform_fingerprint FROM etl.runs WHERE run_id = %s",
        (run_id,),
    )
    assert isinstance(value, str) and value.startswith("sha256:")
    return value


def test_a_worker_running_an_edited_transform_refuses_the_resumed_run_once_and_counts_nothing(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    name, path = user_module(stack, tmp_path, BROKEN)
    # A refused delivery waits out a retry countdown in the worker that refused it. Stopped
    # then, Celery's warm shutdown has hung until the test killed it (twice under
    # pytest-xdist), leaving those messages in Redis's unacked hash until the visibility
    # timeout and one retry, killed between its ack and its new message, to the sweeper
    # after ETL_SWEEP_AFTER: both short here, so the restarted worker gets every partition
    # back in seconds, not 45 minutes (docs/reliability.md, Known limits).
    stack.extra.update(
        short_timings(
            lease=10,
            task_limit=20,
            ETL_SWEEP_AFTER="25",
            ETL_RETRY_BACKOFF_BASE="0.5",
            ETL_RETRY_BACKOFF_MAX="1",
        )
    )
    rows = make_raw_table(stack.database_url, zips=4)
    old = start_worker(concurrency=1)

    first = enqueue(stack, "--all-zips", "--wait", "--transform", f"{name}:clean", check=False)
    run_id = first.stdout.splitlines()[0]
    assert first.returncode == 1 and "version one is broken" in first.stdout
    wanted_before = run_fingerprint(stack, run_id)

    path.write_text(FIXED)  # the fix, while the worker keeps the broken version loaded
    enqueue(stack, "--resume", run_id)
    wanted = run_fingerprint(stack, run_id)
    assert wanted != wanted_before

    said = f"restart the workers: they run transform {name}:clean version {wanted_before}, "
    said += f"the run wants {wanted}"
    wait_until(lambda: old.log().count("refused (see above)") >= 6, 90, what="refusals")
    assert old.log().count(said) == 1  # once per (worker, run), however many deliveries
    deliveries = old.log().count("refused (see above)")
    # Refused deliveries are no attempts: every partition waits, untouched, for a worker
    # that runs the fixed code.
    assert {(state, attempts) for state, attempts, _ in partitions(stack, run_id)} == {
        ("queued", 0)
    }
    status = run_json(stack, run_id)
    assert [(r["loaded"], r["wanted"]) for r in status["refusals"]] == [(wanted_before, wanted)]
    text = run_cli("etl-status", run_id, env=stack.env, check=True).stdout
    assert "1 worker(s) refuse this run's partitions" in text and said in text

    old.stop()
    start_worker(concurrency=2, name=old.name)  # restarted: loads the fixed module
    wait_until(
        lambda: {s for s, _, _ in partitions(stack, run_id)} == {"finished"}, 120, what="the run"
    )
    # Each partition records the fingerprint of the code that wrote its rows.
    assert {fp for _, _, fp in partitions(stack, run_id)} == {wanted}
    assert scalar(stack.database_url, "SELECT count(*) FROM clean_companies") == rows
    assert run_json(stack, run_id)["refusals"] == []  # the restarted worker serves it
    exactly_once(
        stack.database_url,
        "transform edited, workers not restarted",
        "the transform module's source fixed between a failed run and its --resume; the one "
        "worker (-c 1) kept the broken version loaded",
        f"the worker refused the run's {len(partitions(stack, run_id))} zips before claiming "
        f"them ({deliveries} deliveries sent back), said 'restart the workers: they run "
        "transform X version A, the run wants B' once, recorded one refusal (etl-status: "
        "1 worker refuses), counted no attempt; restarted, it finished every zip, each "
        "recording the new fingerprint",
    )


def test_a_transform_module_off_the_allow_list_is_refused_at_enqueue_and_never_imported_by_workers(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    name, path = user_module(stack, tmp_path, TRACED)
    trace = path.with_suffix(".imported")
    make_raw_table(stack.database_url, zips=2)
    allowed = stack.extra["ETL_TRANSFORM_MODULES"]

    # The producer refuses it when its allow-list does not name it, before importing it.
    refused = enqueue(
        stack,
        "--all-zips",
        "--transform",
        f"{name}:clean",
        check=False,
        ETL_TRANSFORM_MODULES="tests.support.transforms",
    )
    assert refused.returncode == 1
    assert f"module {name!r} is not on the allow-list" in refused.stderr
    assert "ETL_TRANSFORM_MODULES" in refused.stderr
    assert not trace.exists()

    # A run naming it anyway (whoever can insert runs): workers whose list lacks it refuse
    # its partitions without importing it, and say so once.
    worker = start_worker(
        concurrency=1,
        ETL_TRANSFORM_MODULES="tests.support.transforms",
        ETL_RETRY_BACKOFF_BASE="0.5",
        ETL_RETRY_BACKOFF_MAX="1",
    )
    run_id = enqueue(
        stack, "--all-zips", "--transform", f"{name}:clean", ETL_TRANSFORM_MODULES=allowed
    ).stdout.splitlines()[0]
    wait_until(lambda: worker.log().count("refused (see above)") >= 4, 90, what="refusals")
    assert worker.log().count("is not on the allow-list") == 1
    assert {(s, a) for s, a, _ in partitions(stack, run_id)} == {("queued", 0)}
    assert "celery" not in trace.read_text()  # only etl-enqueue imported it
    assert len(run_json(stack, run_id)["refusals"]) == 1
    record(
        "a run naming a module off the allow-list",
        "etl-enqueue with ETL_TRANSFORM_MODULES not listing the module; then a run naming it "
        "anyway, served by a worker whose list lacks it",
        "etl-enqueue refused it in one line naming the module and ETL_TRANSFORM_MODULES, "
        "before importing it; the worker refused the run's zips without importing the module "
        "(its import trace has no worker), said so once, counted no attempt",
        rows_lost=0,
        rows_doubled=0,
    )

    # A shipped transform needs no listing (the refused run cancelled first: one run per
    # target at a time).
    enqueue(stack, "--cancel", run_id)
    ok = enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY, ETL_TRANSFORM_MODULES="")
    assert ok.returncode == 0


def test_every_partition_records_the_fingerprint_of_the_transform_that_wrote_it(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    make_raw_table(stack.database_url, zips=3)
    start_worker(concurrency=2)
    run_id = enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY).stdout.splitlines()[0]
    wanted = run_fingerprint(stack, run_id)
    assert {(s, fp) for s, _, fp in partitions(stack, run_id)} == {("finished", wanted)}
    assert table_difference(stack.database_url, "raw_companies", "clean_companies") == (0, 0)
