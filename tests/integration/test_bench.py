"""etl-bench on tiny data: every line runs, is checked, lands in the report, and the
benchmark leaves nothing behind but its generated raw tables. (Timings are not asserted:
benchmarks are run, not tested.)"""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.support.cli import run_cli
from tests.support.services import BASE_BROKER_URL, Stack


def test_etl_bench_runs_every_line_on_tiny_data_and_writes_the_report(
    stack: Stack, tmp_path: Path
) -> None:
    report, chart = tmp_path / "BENCHMARKS.md", tmp_path / "bench.png"
    database = stack.database_url.rpartition("/")[2]

    result = run_cli(
        "etl-bench",
        *("--rows", "3000", "--zips", "12", "--subset", "0.3"),
        *("--onerow-partitions", "40", "--enqueue-partitions", "300"),
        *("--database", database, "--database-url", stack.database_url),
        *("--broker-url", BASE_BROKER_URL, "--output", str(report), "--chart", str(chart)),
        env=stack.env,
        timeout=240,
        check=True,
    )

    text = report.read_text()
    assert f"wrote {report}" in result.stdout
    assert chart.stat().st_size > 0 and chart.read_bytes()[:4] == b"\x89PNG"
    assert "--rows 3000 --zips 12" in text  # the exact command, to rerun it
    main = [row.split("|") for row in text.splitlines() if row.count("|") == 9]  # 8 columns
    table = {cells[1].strip(): cells for cells in main}
    for line in (
        "SQL floor",
        "COPY pipe floor",
        "seed-style script, no index (extrapolated)",
        "seed-style script (extrapolated)",
        "pandas to_sql (extrapolated)",
        "etl-worker, identity",
        "etl-worker, clean_companies",
    ):
        assert line in table, f"missing line {line!r} in:\n{text}"
    exact = {name: cells[6].strip() for name, cells in table.items()}
    assert exact["COPY pipe floor"] == exact["etl-worker, identity"] == "yes"
    assert exact["etl-worker, clean_companies"] == "yes"
    assert exact["seed-style script (extrapolated)"] == "**no**"  # it mangles the data
    for section in ("## Targets", "## Fixed cost", "## DataFrame memory", "## Read and write"):
        assert section in text
    with psycopg.connect(stack.database_url) as conn:
        left = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        schemas = conn.execute("SELECT to_regnamespace('etl_bench')").fetchone()
    assert left == {"bench_raw_companies", "bench_onerow", "bench_enqueue"}  # kept for reuse
    assert schemas == (None,)
