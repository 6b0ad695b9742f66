"""Flower, as this package configures it: which columns the tasks page shows, how a
partition task reads there, and how many tasks Flower keeps.

`celery -A etl_worker flower` needs nothing else: Flower takes the broker URL and the
Redis key prefix from the app's configuration (`celery_app.py`), and task events are on in
that configuration. Flower's own settings still win over these defaults: `FLOWER_*`
variables, `--option=value` flags and a `flowerconfig.py` are applied after them.

Flower is a window on the fleet, not the record of a run: it forgets tasks beyond
`max_tasks`, and it sees only the events sent while it runs. `etl-status` and `etl-report`
read the audit table, which is.
"""

from __future__ import annotations

import ast
import sys
from typing import Any

from etl_worker.celery_app import TASK_NAME
from etl_worker.partition import partition_label

#: Columns of Flower's tasks page: the partition (kwargs, made readable by `format_task`)
#: next to its state and timing. The name links to the task's page; the uuid column is left
#: out, as 36 characters of it would push the worker and retries off a laptop screen.
TASKS_COLUMNS = "name,kwargs,state,received,runtime,worker,retries"
#: Tasks Flower keeps in memory (its default is 100,000). A 40,000-partition run with
#: retries would otherwise hold hundreds of MB in Flower for history that the audit table
#: already has in full.
MAX_TASKS = 20_000


def describe_partition(kwargs: dict[str, Any]) -> str:
    """'zip 10016  part 17  run 20251125-101500-ab12cd' for a partition task's kwargs (the run
    last: it is the same on every row, and what a narrow column cuts off)."""
    split = kwargs.get("split") or [None, None]
    zip_code = partition_label(kwargs.get("zip"), *split[:2])
    return f"zip {zip_code}  part {kwargs.get('part_id')}  run {kwargs.get('run_id')}"


def format_task(task: Any) -> Any:
    """Flower's `format_task` hook: show a partition task's arguments as one short line.

    Flower hands a copy of its `celery.events.state.Task`, whose `kwargs` is the repr the
    producer sent (`kwargsrepr`). Anything that does not parse is left as it is.
    """
    if getattr(task, "name", None) != TASK_NAME:
        return task
    try:
        kwargs = ast.literal_eval(task.kwargs or "")
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return task
    if isinstance(kwargs, dict) and "zip" in kwargs:
        task.kwargs = describe_partition(kwargs)
        task.args = ""
    return task


def flower_defaults() -> dict[str, Any]:
    return {"tasks_columns": TASKS_COLUMNS, "format_task": format_task, "max_tasks": MAX_TASKS}


def install_flower_defaults() -> bool:
    """Give Flower this package's defaults, when Flower is what is starting.

    The celery command imports every installed sub-command (Flower's among them) before it
    loads `-A etl_worker`, and Flower reads its options only after that, from the
    environment, the command line and flowerconfig.py — each of which overrides what is set
    here. A function (`format_task`) can only come from Python, hence this hook. Returns
    False (and does nothing) when Flower is not loaded.
    """
    module = sys.modules.get("flower.options")
    if module is None:
        return False
    options = module.options
    for name, value in flower_defaults().items():
        setattr(options, name, value)
    return True
