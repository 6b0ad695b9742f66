"""How Flower shows partition tasks, and how the package hands Flower its defaults."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from etl_worker.celery_app import TASK_NAME
from etl_worker.ops.flower import (
    MAX_TASKS,
    TASKS_COLUMNS,
    describe_partition,
    format_task,
    install_flower_defaults,
)


def flower_task(name: str = TASK_NAME, kwargs: str = "", args: str = "()") -> SimpleNamespace:
    return SimpleNamespace(name=name, kwargs=kwargs, args=args)


def test_a_partition_task_shows_its_zip_part_and_run_on_one_line() -> None:
    task = flower_task(kwargs="{'run_id': '20250101-000000-abc123', 'zip': '10016', 'part_id': 7}")

    shown = format_task(task)

    assert shown.kwargs == "zip 10016  part 7  run 20250101-000000-abc123"
    assert shown.args == ""


@pytest.mark.parametrize(
    ("zip_code", "split", "label"),
    [(None, None, "NULL"), ("", None, "''"), ("07030", [0, 5000], "07030[0,5000)")],
)
def test_null_empty_and_split_partitions_are_named_as_etl_status_names_them(
    zip_code: str | None, split: list[int] | None, label: str
) -> None:
    kwargs = {"run_id": "r", "zip": zip_code, "part_id": 1, "split": split}

    assert describe_partition(kwargs) == f"zip {label}  part 1  run r"


@pytest.mark.parametrize(
    "kwargs",
    [
        "{'run_id': 'r', 'zip': '1...",  # Celery's safe repr truncated it
        "__import__('os').system('true')",  # never evaluated
        "['not', 'a', 'dict']",
        "",
    ],
)
def test_arguments_that_do_not_parse_are_left_as_they_are(kwargs: str) -> None:
    assert format_task(flower_task(kwargs=kwargs)).kwargs == kwargs


def test_other_tasks_are_left_alone() -> None:
    task = flower_task(name="celery.chord_unlock", kwargs="{'zip': '1'}")

    assert format_task(task).kwargs == "{'zip': '1'}"


def test_defaults_are_installed_only_when_flower_is_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "flower.options", raising=False)
    assert install_flower_defaults() is False

    options = SimpleNamespace()
    monkeypatch.setitem(sys.modules, "flower.options", SimpleNamespace(options=options))
    assert install_flower_defaults() is True
    assert options.format_task is format_task
    assert options.tasks_columns == TASKS_COLUMNS
    assert options.max_tasks == MAX_TASKS


def test_flowers_tasks_page_knows_every_column_we_ask_for() -> None:
    from flower.views.tasks import TASK_COLUMNS

    assert set(TASKS_COLUMNS.split(",")) <= set(TASK_COLUMNS)
