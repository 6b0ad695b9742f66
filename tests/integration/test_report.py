"""etl-report on a real run: one self-contained HTML file with the charts and the failures."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import enqueue, run_cli
from tests.support.data import make_raw_table
from tests.support.services import Stack, Worker

POISON = "tests.support.transforms:fail_on_poisoned_zips"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_is_one_html_file_with_four_charts_and_every_failed_zip(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    make_raw_table(stack.database_url, zips=6, rows_per_zip=4)
    poison = tmp_path / "poison.txt"
    poison.write_text("00002\n00005\n")
    start_worker(concurrency=2, ETL_TEST_POISON_FILE=str(poison))
    run = enqueue(stack, "--all-zips", "--wait", "--transform", POISON, check=False)
    run_id = run.stdout.splitlines()[0]
    path = tmp_path / "report.html"

    result = run_cli("etl-report", run_id, "--html", str(path), env=stack.env, check=True)

    assert result.stdout.strip().startswith(f"wrote {path}: run {run_id}, 8 partitions, 2 failed")
    page = path.read_text()
    # Self-contained: no file, script or stylesheet fetched from anywhere.
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page)
    charts = dict(
        re.findall(
            r'<figure id="([\w-]+)"><img alt="[^"]+" src="data:image/png;base64,([^"]+)"', page
        )
    )
    assert set(charts) == {"throughput", "rows-per-zip", "duration", "memory"}
    for data in charts.values():
        assert base64.b64decode(data).startswith(PNG_MAGIC)
    assert "Throughput over time" in page and "Memory per zip" in page
    # The failure table: one row per failed zip, with its error.
    failed_rows = re.findall(
        r"<tr><td>(\d{5})</td><td class=\"num\">\d+</td><td>([^<]*)</td></tr>", page
    )
    assert [zip_code for zip_code, _ in failed_rows] == ["00002", "00005"]
    assert all("ValueError: cannot parse revenue for zip" in error for _, error in failed_rows)
    assert f"etl-enqueue --resume {run_id}" in page
