"""Operations: what an operator uses to size, scale and watch a fleet.

- `plan`: `etl-plan`, partition sizes and the fleet a table needs;
- `autoscale`: the memory-aware `worker_autoscaler` (Celery loads it by name, see
  `celery_app.AUTOSCALER`, only for `--autoscale`);
- `metrics`: `etl-metrics`, backlog per worker for target tracking;
- `flower`: Flower's defaults for this package.

None of these is needed for a partition's rows to land exactly once: that is the core's job
(the top-level modules — pipeline, audit, sweeper, ...), which imports nothing from here.
The sweeper belongs to the core, not here: the worker runs it and it is part of the
exactly-once machinery. The dependency rules are in pyproject.toml ([tool.importlinter]).
"""
