"""etl-worker: run a pandas transform over a Postgres table, one Celery task per partition.

`celery -A etl_worker worker` finds the Celery app as `etl_worker.app`. It is imported
lazily so that `import etl_worker` (the CLI, the tests) does not pay for Celery.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in {"app", "celery"}:
        from etl_worker.tasks import app

        return app
    raise AttributeError(f"module 'etl_worker' has no attribute {name!r}")
