"""A run end to end: real Postgres, real Redis, real `celery worker` processes, the CLI."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import psycopg

from tests.support.cli import IDENTITY, enqueue, run_json
from tests.support.data import make_raw_table, scalar, table_difference
from tests.support.rabbit import BOTH_BROKERS
from tests.support.services import Stack, Worker


def audit_states(stack: Stack, run_id: str) -> dict[str | None, str]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT part_key, state::text FROM etl.partitions WHERE run_id = %s", (run_id,)
        ).fetchall()
    return {key: state for key, state in rows}


@BOTH_BROKERS
def test_full_run_writes_every_row_once_and_audits_every_zip(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    rows = make_raw_table(stack.database_url, zips=20)
    start_worker(concurrency=2)

    result = enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY)

    run_id = result.stdout.splitlines()[0]
    assert run_id.count("-") == 2 and " " not in run_id  # the run id alone on line 1
    assert scalar(stack.database_url, "SELECT count(*) FROM clean_companies") == rows
    states = audit_states(stack, run_id)
    assert len(states) == 22  # 20 zips + the NULL partition + the '' partition
    assert set(states.values()) == {"finished"}
    assert None in states and "" in states
    report = run_json(stack, run_id)
    assert report["run_id"] == run_id
    assert report["states"]["finished"] == 22
    assert report["failures"] == []
    assert report["rows_read"] == report["rows_written"] == rows


def test_identity_transform_round_trips_every_awkward_value_exactly(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    make_raw_table(stack.database_url, zips=5, rows_per_zip=12)
    start_worker(concurrency=1)

    enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY)

    assert table_difference(stack.database_url, "raw_companies", "clean_companies") == (0, 0)
    url = stack.database_url
    # Spot-check the values a text-format pipeline typically mangles.
    assert scalar(url, "SELECT count(*) FROM clean_companies WHERE notes = ''") == scalar(
        url, "SELECT count(*) FROM raw_companies WHERE notes = ''"
    )
    assert scalar(url, "SELECT count(*) FROM clean_companies WHERE notes = %s", ("\\N",)) > 0  # type: ignore[operator]
    assert scalar(url, "SELECT count(*) FROM clean_companies WHERE employees IS NULL") > 0  # type: ignore[operator]
    assert scalar(url, "SELECT min(zip_code) FROM clean_companies WHERE zip_code <> ''") == "00000"
    assert scalar(url, "SELECT pg_typeof(revenue)::text FROM clean_companies LIMIT 1") == "numeric"


def test_rerunning_a_zip_and_a_whole_run_leaves_exactly_one_copy(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    rows = make_raw_table(stack.database_url, zips=6)
    start_worker(concurrency=2)

    first = enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY)
    enqueue(stack, "--zips", "00001,00002", "--wait", "--transform", IDENTITY)
    enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY)

    assert scalar(stack.database_url, "SELECT count(*) FROM clean_companies") == rows
    assert table_difference(stack.database_url, "raw_companies", "clean_companies") == (0, 0)
    # The first run's audit is untouched by the later ones.
    assert set(audit_states(stack, first.stdout.splitlines()[0]).values()) == {"finished"}


def test_a_transform_that_raises_fails_only_its_zip_and_resume_retries_just_that_zip(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    rows = make_raw_table(stack.database_url, zips=8, rows_per_zip=5)
    poison = tmp_path / "poison.txt"
    poison.write_text("00003\n")
    start_worker(concurrency=2, ETL_TEST_POISON_FILE=str(poison), ETL_MAX_RETRIES="1")
    transform = "tests.support.transforms:fail_on_poisoned_zips"

    failed = enqueue(stack, "--all-zips", "--wait", "--transform", transform, check=False)

    assert failed.returncode == 1  # --wait exits non-zero when a zip failed
    run_id = failed.stdout.splitlines()[0]
    states = audit_states(stack, run_id)
    assert states.pop("00003") == "failed"
    assert set(states.values()) == {"finished"}
    report = run_json(stack, run_id)
    assert [f["zip"] for f in report["failures"]] == ["00003"]
    assert "ValueError: cannot parse revenue for zip 00003" in report["failures"][0]["error"]
    assert scalar(stack.database_url, "SELECT count(*) FROM clean_companies") == rows - 5

    poison.unlink()  # the data is fixed; resume sends only what did not finish
    resumed = enqueue(stack, "--resume", run_id, "--wait")

    assert resumed.stdout.splitlines()[0] == run_id
    assert "re-enqueued 1 partitions" in resumed.stderr
    assert set(audit_states(stack, run_id).values()) == {"finished"}
    assert table_difference(stack.database_url, "raw_companies", "clean_companies") == (0, 0)


def test_unknown_table_or_column_is_a_clear_error_and_writes_nothing(stack: Stack) -> None:
    make_raw_table(stack.database_url)

    no_table = enqueue(stack, "--all-zips", "--raw-table", "no_such_table", check=False)
    no_column = enqueue(stack, "--all-zips", "--partition-column", "zip", check=False)
    # Allowed (ETL_TRANSFORM_MODULES), so the error is that it does not exist.
    no_transform = enqueue(
        stack, "--all-zips", "--transform", "nope.mod:fn", check=False, ETL_TRANSFORM_MODULES="nope"
    )

    assert no_table.returncode == 1
    assert no_table.stderr.strip().startswith('error: table "no_such_table" not found')
    assert no_column.returncode == 1
    assert 'column "zip" not found in table "raw_companies"' in no_column.stderr
    assert no_transform.returncode == 1
    assert "transform 'nope.mod:fn' not found" in no_transform.stderr
    for result in (no_table, no_column, no_transform):
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
    assert scalar(stack.database_url, "SELECT to_regclass('clean_companies')") is None
    assert scalar(stack.database_url, "SELECT to_regnamespace('etl')") is None


def test_a_transform_whose_output_does_not_match_the_target_is_refused_before_enqueueing(
    stack: Stack,
) -> None:
    make_raw_table(stack.database_url)

    result = enqueue(
        stack,
        "--all-zips",
        "--transform",
        "tests.support.transforms:drop_notes_column",
        check=False,
    )

    assert result.returncode == 1
    assert "does not match target table" in result.stderr
    assert "missing notes" in result.stderr
    assert scalar(stack.database_url, "SELECT to_regnamespace('etl')") is None


def test_a_transform_that_moves_rows_to_another_zip_fails_that_zip(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    make_raw_table(stack.database_url, zips=2)
    start_worker(concurrency=1)

    result = enqueue(
        stack,
        "--zips",
        "00001",
        "--wait",
        "--transform",
        "tests.support.transforms:move_rows_to_another_zip",
        check=False,
    )

    assert result.returncode == 1
    report = run_json(stack, result.stdout.splitlines()[0])
    assert "changed the partition column zip_code" in report["failures"][0]["error"]
    assert scalar(stack.database_url, "SELECT count(*) FROM clean_companies") == 0


def test_dry_run_reads_and_transforms_every_zip_and_writes_nothing(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    rows = make_raw_table(stack.database_url, zips=4)
    start_worker(concurrency=2)

    result = enqueue(stack, "--all-zips", "--wait", "--dry-run", "--transform", IDENTITY)

    report = run_json(stack, result.stdout.splitlines()[0])
    assert report["mode"] == "dry_run"
    assert report["states"]["finished"] == 6
    assert report["rows_read"] == rows and report["rows_written"] == 0
    assert all(slow["rows"] == 7 for slow in report["slowest"])  # rows read, as none written
    assert scalar(stack.database_url, "SELECT to_regclass('clean_companies')") is None


def test_a_dead_broker_is_a_clear_error_before_anything_is_written(stack: Stack) -> None:
    make_raw_table(stack.database_url)

    result = enqueue(
        stack, "--all-zips", "--broker-url", "redis://:hunter2@127.0.0.1:1/0", check=False
    )

    assert result.returncode == 1
    assert "cannot connect to the broker at redis://:***@127.0.0.1:1/0" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert scalar(stack.database_url, "SELECT to_regnamespace('etl')") is None


def test_tables_behind_a_schema_named_like_the_user_are_found_where_they_are(
    stack: Stack, start_worker: Callable[..., Worker]
) -> None:
    # The Compose stack's database user is `etl`, as the audit schema is: once etl-enqueue
    # has made that schema, "$user" puts it first on the search path, ahead of public where
    # the tables are. Here the URL's search_path does the same with the test's audit schema.
    audit_schema = f"audit_{uuid.uuid4().hex[:8]}"
    rows = make_raw_table(stack.database_url, zips=4)
    search_path = quote(f"-csearch_path={audit_schema},public")
    stack.extra["ETL_DATABASE_URL"] = f"{stack.database_url}?options={search_path}"
    stack.extra["ETL_AUDIT_SCHEMA"] = audit_schema
    start_worker(concurrency=1)

    result = enqueue(stack, "--all-zips", "--wait", "--transform", IDENTITY, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "finished 6  failed 0" in result.stdout
    assert scalar(stack.database_url, "SELECT count(*) FROM public.clean_companies") == rows
    assert table_difference(stack.database_url, "raw_companies", "clean_companies") == (0, 0)
