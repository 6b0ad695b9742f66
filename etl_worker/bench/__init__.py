"""`etl-bench`: how close etl-worker gets to what the hardware and Postgres allow, measured
in one run, on one table, with one number of processes.

One module per measurement: `floors` (SQL and binary COPY pipe), `baselines` (the seed-style
script and `to_sql`), `fleet` (etl-worker end to end through real Celery workers: the
transforms, the fixed cost per partition, enqueueing), `frames` (DataFrame memory and
downcasting), `paths` (read and write paths compared). `data` builds the tables they share,
`measure` times them (and samples Postgres' CPU), `runner` runs them all and `report` writes
BENCHMARKS.md and its chart.

Three more, run with `python -m` on the same cluster, count rather than time, for judging a
change on a busy machine: `perpartition` (round trips, statements and Postgres CPU per
partition), `shrinkcost` (what downcasting the output costs and saves), `readplan` (heap
pages a partition's read visits, as loaded and in zip order). docs/scaling.md uses them.
"""
