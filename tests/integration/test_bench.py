"""etl-bench on tiny data: every line runs, is checked, lands in the report, and the
benchmark leaves nothing behind but its generated tables. (Timings are not asserted:
benchmarks are run, not tested.)"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from etl_worker.bench.wire import RoundTripRelay
from tests.support.cli import run_cli
from tests.support.services import BASE_BROKER_URL, Stack


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    """A directory the postgres user can own (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="etl-bench-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _rows(text: str, columns: int) -> dict[str, list[str]]:
    """The Markdown table rows with `columns` columns, by their first cell."""
    rows = [
        row.split("|")
        for row in text.splitlines()
        if row.count("|") - row.count("\\|") == columns + 1
    ]
    return {cells[1].strip(): [c.strip() for c in cells[1:-1]] for cells in rows}


def test_etl_bench_runs_every_line_on_its_own_cluster_and_writes_the_report(
    stack: Stack, tmp_path: Path, cluster_dir: Path
) -> None:
    report, chart = tmp_path / "BENCHMARKS.md", tmp_path / "bench.png"

    result = run_cli(
        "etl-bench",
        *("--rows", "3000", "--zips", "12", "--onerow-partitions", "40"),
        *("--enqueue-partitions", "300", "--small-partitions", "60", "--small-rows", "5"),
        *("--round-trip-partitions", "20", "--profile-partitions", "3"),
        *("--cluster-dir", str(cluster_dir), "--profile-output", str(tmp_path / "profile")),
        *("--scaling-results", str(tmp_path / "none.json")),
        *("--broker-url", BASE_BROKER_URL, "--output", str(report), "--chart", str(chart)),
        env=stack.env,
        timeout=600,
        check=True,
    )

    text = report.read_text()
    assert f"wrote {report}" in result.stdout
    assert chart.read_bytes()[:4] == b"\x89PNG"
    assert "--rows 3000 --zips 12" in text  # the exact command, to rerun it
    assert "a cluster of the benchmark's own" in text
    main = _rows(text, 8)
    exact = {name: cells[5] for name, cells in main.items()}
    for line in (
        "SQL floor",
        "COPY pipe floor",
        "Pool script, identity",
        "Pool script, clean_companies",
        "etl-worker, identity",
        "etl-worker, clean_companies",
    ):
        assert exact.get(line) == "yes", f"line {line!r} missing or not exact in:\n{text}"
    # to_sql runs on every zip (NULL too, whose rows `= NULL` never finds): not extrapolated.
    assert "pandas to_sql" in main and "; all " in main["pandas to_sql"][7]
    # The blog's script mangles the data: reported as the time it takes to fail.
    for line in ("seed-style script, no index (time to fail)", "seed-style script (time to fail)"):
        assert main[line][2] == "fails" and main[line][5] == "**no**"
    assert "psql binary COPY" in main["COPY pipe floor"][7]
    assert float(main["etl-worker, identity"][6]) > 0  # Postgres CPU s per 1M rows
    targets = _rows(text, 3)
    for goal in ("1. identity", "2. clean", "3. Postgres CPU / 1M rows, identity", "4. ≥", "6. "):
        found = [name for name in targets if name.startswith(goal)]
        assert found and targets[found[0]][2] in ("yes", "**no**"), f"goal {goal!r}: {targets}"
    # Where Postgres' time went, by statement kind, each audit query by its name.
    assert "**etl-worker, identity**" in text
    for kind in ("write: COPY FROM STDIN", "read: COPY (SELECT …) TO STDOUT",
                 "audit: claim_partition", "audit: mark_finished", "audit: begin_write",
                 "DELETE the partition's old rows"):  # fmt: skip
        assert f"| {kind} |" in text, f"no {kind!r} in:\n{text}"
    round_trips = float(
        text.split("Round trips between the workers and Postgres: **")[1].split()[0]
    )
    assert 5 < round_trips < 100
    profile = _rows(text, 3)
    assert float(profile["read: ADBC COPY TO -> Arrow"][1]) > 0
    assert float(profile["transform (the user's function)"][2]) > 0  # clean_companies
    assert len(list((tmp_path / "profile").glob("partition-*.txt"))) == 2
    # The cluster is stopped; its data (the generated tables) stays for the next run.
    assert not (cluster_dir / "data" / "postmaster.pid").exists()
    assert (cluster_dir / "data" / "PG_VERSION").exists()


def test_etl_bench_on_a_shared_server_runs_one_part_and_keeps_only_its_raw_table(
    stack: Stack, tmp_path: Path
) -> None:
    report = tmp_path / "BENCHMARKS.md"
    database = stack.database_url.rpartition("/")[2]
    container = "## Container\n\nWritten by another command.\n"
    report.write_text(f"# Benchmarks\n\nan older run\n\n{container}")

    run_cli(
        "etl-bench",
        *("--rows", "2000", "--zips", "8", "--only", "floors", "--shared-postgres"),
        *("--database", database, "--database-url", stack.database_url),
        *("--broker-url", BASE_BROKER_URL, "--output", str(report)),
        *("--chart", str(tmp_path / "c.png"), "--scaling-results", str(tmp_path / "n.json")),
        env=stack.env,
        timeout=240,
        check=True,
    )

    text = report.read_text()
    main = _rows(text, 8)
    assert set(main) - {"line", "---"} == {"SQL floor", "COPY pipe floor"}
    assert "shared server" in text
    assert "not measured (etl-bench --only pool --only etl-worker)" in text
    assert "an older run" not in text and container in text  # another command's section
    with psycopg.connect(stack.database_url) as conn:
        left = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        schemas = conn.execute("SELECT to_regnamespace('etl_bench')").fetchone()
    assert left == {"bench_raw_companies"}  # kept for reuse; the targets are gone
    assert schemas == (None,)


def test_the_scaling_series_records_each_size_and_draws_time_and_memory_against_rows(
    stack: Stack, tmp_path: Path, cluster_dir: Path
) -> None:
    results, chart = tmp_path / "scaling.json", tmp_path / "scaling.png"
    common = [
        *("--scale-partition-rows", "250", "--cluster-dir", str(cluster_dir)),
        *("--scaling-results", str(results), "--scaling-chart", str(chart)),
        *("--broker-url", BASE_BROKER_URL),
    ]

    first = run_cli("etl-bench", "--scale", "1000", *common, env=stack.env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "a chart needs two sizes or more" in first.stdout
    second = run_cli("etl-bench", "--scale", "3000", *common, env=stack.env, timeout=300)

    assert second.returncode == 0, second.stderr
    runs = json.loads(results.read_text())["runs"]
    assert sorted(int(rows) for rows in runs) == [1000, 3000]  # one run each, kept
    big = runs["3000"]
    assert big["zips"] >= 12 and big["enqueue_partitions"] == big["zips"]  # '' and NULL too
    assert big["peak_rss_bytes"] > 0 and big["status_seconds"] > 0
    assert chart.read_bytes()[:4] == b"\x89PNG"
    assert f"| 3,000 | {big['zips']:,} / " in second.stdout


def test_the_relay_counts_one_round_trip_per_statement_and_one_per_pipelined_batch(
    stack: Stack,
) -> None:
    with RoundTripRelay("127.0.0.1", 5432) as relay:
        url = relay.url(stack.database_url.rpartition("/")[2])
        with psycopg.connect(url, autocommit=True) as conn:
            before = relay.round_trips
            for _ in range(5):
                conn.execute("SELECT 1").fetchone()
            five = relay.round_trips - before
            before = relay.round_trips
            with conn.pipeline():
                for _ in range(5):
                    conn.execute("SELECT 1")
            batched = relay.round_trips - before

    assert five == 5
    assert batched < 5
