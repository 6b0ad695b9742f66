"""Reporting: what a run did, read from the audit table and the tables it wrote.

- `status`, `progress`: run summaries and the live progress bar (`etl-status`, `--wait`);
- `report`, `charts`: `etl-report`'s one-file HTML report and its matplotlib charts;
- test mode: `sample` draws a sample of the raw table (`etl-sample`), `testmode` runs it
  into `<target>_test`, `verify` diffs that with a truth table (`etl-enqueue --test`).

Workers never import this package (rich and matplotlib stay out of them); it builds on the
core and on `ops`. The dependency rules are in pyproject.toml ([tool.importlinter]).
"""
