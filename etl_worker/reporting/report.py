"""`etl-report`: one self-contained HTML file about a run, from the audit table.

The file carries everything inline (charts as base64 PNG, styles in a <style> block), so it
can be mailed, attached to a ticket or opened offline. It holds the `etl-status` summary,
four charts (`charts.py`), the failures grouped by error and one row per failed partition,
and the slowest partitions.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from etl_worker.audit import Audit
from etl_worker.reporting import charts
from etl_worker.reporting.status import RunStatus, format_status, run_status

#: Failed partitions listed one per row; beyond this the groups above the table still
#: count every one of them.
#: Full tracebacks the report carries (the first partition of each distinct error).
MAX_TRACEBACKS = 20
MAX_FAILURE_ROWS = 1000

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 0.85em; }
table { border-collapse: collapse; font-size: 0.85em; width: 100%; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1em; }
figure { margin: 0; } figure img { width: 100%; } figcaption { color: #666; font-size: 0.85em; }
.ok { color: #2ca02c; } .bad { color: #d62728; }
"""


@dataclass(frozen=True)
class Report:
    run_id: str
    html: str
    partitions: int
    failures: int


def build_report(audit: Audit, run_id: str) -> Report:
    """The run's report as one HTML document."""
    status = run_status(audit, run_id)
    parts = pd.DataFrame(audit.partitions(run_id))
    return Report(run_id, render_html(status, parts), len(parts), status.failed)


def write_report(audit: Audit, run_id: str, path: Path) -> Report:
    report = build_report(audit, run_id)
    path.write_text(report.html, encoding="utf-8")
    return report


def render_html(status: RunStatus, parts: pd.DataFrame) -> str:
    e = html.escape
    verdict = (
        f'<span class="bad">{status.failed:,} failed</span>'
        if status.failed
        else ('<span class="ok">all finished</span>' if status.complete else "in progress")
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = [
        f"<h1>Run {e(status.run_id)}: {verdict}</h1>",
        f"<p>{e(status.raw_table)} &rarr; {e(status.target_table)}, transform "
        f"<code>{e(status.transform)}</code>, mode {e(status.mode)}. Generated {generated} "
        "from the audit table.</p>",
        "<h2>Summary</h2>",
        f"<pre>{e(format_status(status))}</pre>",
        "<h2>Charts</h2>",
        '<div class="charts">',
        *(
            _chart(anchor, title, caption, draw(parts))
            for anchor, title, caption, draw in charts.CHARTS
        ),
        "</div>",
        *_failures(status),
        *_contract(status),
        *_slowest(status),
    ]
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>etl-worker run {e(status.run_id)}</title>\n<style>{_STYLE}</style>\n"
        f"</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _chart(anchor: str, title: str, caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{anchor}"><img alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(title)}: '
        f"{html.escape(caption)}</figcaption></figure>"
    )


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "\n".join(
        "<tr>"
        + "".join(
            f'<td class="num">{html.escape(_cell(v))}</td>'
            if i in numeric
            else f"<td>{html.escape(_cell(v))}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _failures(status: RunStatus) -> list[str]:
    if not status.failures:
        return ["<h2>Failures</h2>", "<p>None.</p>"]
    groups = [
        [len(zips), error, ", ".join(zips[:20]) + (" …" if len(zips) > 20 else "")]
        for error, zips in status.failures_by_error.items()
    ]
    shown = status.failures[:MAX_FAILURE_ROWS]
    rows = [[f["partition"], f["attempts"], f["error"]] for f in shown]
    more = len(status.failures) - len(shown)
    return [
        f'<h2 id="failures">Failures ({len(status.failures):,})</h2>',
        _table(["partitions", "error", "zips"], groups, numeric={0}),
        "<h3>Failed partitions</h3>",
        _table(["zip", "attempts", "error"], rows, numeric={1}),
        f"<p>{more:,} more not listed.</p>" if more > 0 else "",
        *_tracebacks(status),
        f"<p>Retry them with <code>etl-enqueue --resume {html.escape(status.run_id)}</code>.</p>",
    ]


def _tracebacks(status: RunStatus) -> list[str]:
    """The full traceback of the first failed partition of each kind of error: what the
    one-line error leaves out (the transform's own frames, chained causes)."""
    first = {f["error"]: f for f in status.failures if f.get("traceback")}
    if not first:
        return []
    blocks = [
        f"<details><summary>{html.escape(f['partition'])}: {html.escape(f['error'] or '')}"
        f"</summary><pre>{html.escape(f['traceback'])}</pre></details>"
        for f in list(first.values())[:MAX_TRACEBACKS]
    ]
    return ["<h3>Tracebacks</h3>", *blocks]


def _contract(status: RunStatus) -> list[str]:
    """The run's contract failures, one row per check: values that failed it, partitions
    refused or quarantined, and a sample of offending rows."""
    if not status.contract_failures:
        return []
    rows = [
        [
            check,
            entry["failures"],
            entry["failed"],
            entry["quarantined"],
            ", ".join(entry["partitions"][:20]) + (" …" if len(entry["partitions"]) > 20 else ""),
            "; ".join(str(row) for row in entry["rows"]),
        ]
        for check, entry in status.contract_failures.items()
    ]
    headers = ["check", "values", "failed", "quarantined", "zips", "offending rows (sample)"]
    return [
        f'<h2 id="contract">Contract failures by check ({len(rows):,})</h2>',
        _table(headers, rows, numeric={1, 2, 3}),
    ]


def _slowest(status: RunStatus) -> list[str]:
    if not status.slowest:
        return []
    rows = [[s["partition"], s["seconds"], s["rows"], s["worker"]] for s in status.slowest]
    return [
        "<h2>Slowest partitions</h2>",
        _table(["zip", "seconds", "rows", "worker"], rows, numeric={1, 2}),
    ]
