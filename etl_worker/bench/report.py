"""BENCHMARKS.md and its chart, from a `BenchResult`: the table, the targets checked, the
machine, the versions and the exact command, so anyone can rerun it and compare."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etl_worker.bench import scaling, targets
from etl_worker.bench.measure import Line
from etl_worker.bench.runner import BenchResult
from etl_worker.bench.statements import Statements

PIPE_SHARE_TARGET = targets.PIPE_SHARE_TARGET
PIPE = targets.PIPE
#: Sections of BENCHMARKS.md another command writes (the image and a container's cold start:
#: `python -m tests.support.container_bench`; contracts and incremental runs:
#: `python -m etl_worker.bench.changes`), kept as they are when etl-bench rewrites it.
KEPT_SECTIONS = ("## Container", "## Contracts and incremental runs")


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (error messages may hold pipes or newlines)."""
    return text.replace("|", "\\|").replace("\n", " ")


def _exact(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "**no**")


def _ratio(line: Line, pipe: Line | None) -> str:
    if pipe is None or not pipe.rows_per_second or line.time_to_fail:
        return "-"
    return f"{line.rows_per_second / pipe.rows_per_second:.2f}"


def _pg_cpu(line: Line) -> str:
    cpu = targets.postgres_cpu_per_million(line)
    return "-" if cpu is None else f"{cpu:.2f}"


def main_table(result: BenchResult) -> list[str]:
    pipe = result.line(PIPE)
    megabytes = result.raw.megabytes
    rows = [
        "| line | seconds | rows/s | MB/s | × COPY pipe | exact | Postgres CPU s / 1M rows | how |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for line in result.lines:
        if line.time_to_fail:
            rows.append(
                f"| {line.name} (time to fail) | fails after {line.seconds:,.1f} | fails | - | "
                f"- | {_exact(line.exact)} | - | {_cell(line.note)} |"
            )
            continue
        mark = " (extrapolated)" if line.extrapolated else ""
        rows.append(
            f"| {line.name}{mark} | {line.seconds:,.1f} | {line.rows_per_second:,.0f} | "
            f"{megabytes / line.seconds if line.seconds else 0:,.1f} | {_ratio(line, pipe)} | "
            f"{_exact(line.exact)} | {_pg_cpu(line)} | {_cell(line.note)} |"
        )
    return rows


def statements_section(result: BenchResult) -> list[str]:
    """Where Postgres' time went, by statement kind, for each line that has statements."""
    lines = [line for line in [*result.lines, result.small] if line and _statements(line)]
    if not lines:
        return []
    out = [
        "## Where Postgres' time goes (pg_stat_statements)",
        "",
        "Execution time inside Postgres per statement kind (`total_exec_time`, summed over the "
        "line's statements; the server's CPU per row is in the main table), per 1M rows, and "
        "calls per task. ADBC runs queries that return rows as `COPY (query) TO STDOUT`: the "
        "query inside names the kind.",
        "",
    ]
    for line in lines:
        found = _statements(line)
        assert found is not None
        rows = line.extra.get("measured_rows", line.rows) / 1e6
        tasks = int(line.extra.get("status", {}).get("total") or line.extra.get("tasks") or 0)
        evicted = f" ({found.evicted:,} entries evicted: incomplete)" if found.evicted else ""
        out += [
            f"**{line.name}**: {found.exec_ms / 1000:,.2f} s in {found.calls:,} statements"
            f"{evicted}",
            "",
            "| statement kind | calls | calls per task | exec ms / 1M rows | share | "
            "WAL MB / 1M rows |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for kind in found.kinds:
            per_task = f"{kind.calls / tasks:.2f}" if tasks else "-"
            share = kind.exec_ms / found.exec_ms if found.exec_ms else 0.0
            out.append(
                f"| {_cell(kind.kind)} | {kind.calls:,} | {per_task} | "
                f"{kind.exec_ms / rows:,.1f} | {share:.0%} | {kind.wal_bytes / 1e6 / rows:,.1f} |"
            )
        out.append("")
    return out


def _statements(line: Line) -> Statements | None:
    return line.usage.statements if line.usage else None


def small_partitions_section(result: BenchResult) -> list[str]:
    if result.small is None:
        return []
    out = ["## Small partitions and round trips", "", result.small.note + "."]
    rt = result.round_trips
    if rt:
        out += [
            "",
            f"Round trips between the workers and Postgres: **{rt['per_partition']:.1f} per "
            f"partition**, counted on the wire (a relay counts every turn from client bytes "
            f"to server bytes on the workers' connections) over {rt['partitions']:,} small "
            f"partitions after a warm-up run; {rt['round_trips']:,} in all. The statements "
            "behind them are in the pg_stat_statements table of the small-partitions line "
            "(calls per task).",
        ]
    return [*out, ""]


def profile_section(result: BenchResult) -> list[str]:
    if not result.profiles:
        return []
    first = result.profiles[0]
    steps = list(dict.fromkeys(s for p in result.profiles for s in p.steps))
    names = [p.transform.rsplit(":", 1)[1] for p in result.profiles]
    out = [
        "## Where a 10,000-row partition's milliseconds go (py-spy)",
        "",
        f"A `celery worker -c 1` ran {first.partitions} partitions of "
        f"{first.rows_per_partition:,} rows per transform while `py-spy record --idle` sampled "
        f"its pool process {first.rate} times a second (waiting on Postgres counts). Samples "
        "are put in the pipeline step they were in (bench/profile.py); milliseconds per "
        "partition. Raw samples: "
        + ", ".join(f"`{p.raw_path}`" for p in result.profiles if p.raw_path)
        + ".",
        "",
        "| step | " + " | ".join(f"{n} ms" for n in names) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for step in steps:
        cells = " | ".join(f"{p.steps.get(step, 0.0):.2f}" for p in result.profiles)
        out.append(f"| {_cell(step)} | {cells} |")
    totals = " | ".join(f"**{p.total_ms:.1f}**" for p in result.profiles)
    out += [f"| total | {totals} |", ""]
    return out


def scaling_section(result: BenchResult) -> list[str]:
    table = scaling.table_lines(result.scaling)
    if not table:
        return []
    return [
        "## Scaling (etl-bench --scale)",
        "",
        "identity through the fleet on generated tables of each size, zips of the same mean "
        "size; enqueue is `etl-enqueue --all-zips` as a new process; etl-status on the "
        "finished run. Recorded per size in "
        f"`{result.options.scaling_results}`, chart in `{result.options.scaling_chart}`.",
        "",
        *table,
        "",
    ]


def kept_sections(old: str) -> list[str]:
    """The KEPT_SECTIONS of the report being replaced, each up to the next `## ` heading."""
    kept: list[str] = []
    keeping = False
    for line in old.splitlines():
        if line.startswith("## "):
            keeping = line.strip() in KEPT_SECTIONS
        if keeping:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    return kept


def write_markdown(result: BenchResult, path: Path, chart: Path | None) -> None:
    o, raw, m = result.options, result.raw, result.machine
    sizes = raw.size_summary()
    lines = [
        "# Benchmarks",
        "",
        f"Written by `etl-bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Rerun with:",
        "",
        "```",
        o.command or "etl-bench",
        "```",
        "",
        f"Table: {raw.rows:,} generated demo rows (`etl-seed` data: messy text, NULLs, "
        f"numeric, timestamps), {raw.megabytes:,.1f} MB (heap + TOAST, `pg_table_size`), "
        f"{sizes.get('partitions', 0):,} partitions by zip_code, Zipf-skewed: rows per "
        f"partition min {sizes.get('min', 0):,.0f}, median {sizes.get('median', 0):,.0f}, "
        f"mean {sizes.get('mean', 0):,.0f}, p90 {sizes.get('p90', 0):,.0f}, p99 "
        f"{sizes.get('p99', 0):,.0f}, max {sizes.get('max', 0):,.0f}. Every line uses "
        f"{o.procs} processes and writes into an empty table like the raw one with an index "
        "on zip_code (as etl-enqueue creates it). MB/s is of the raw table. "
        + _postgres_note(result),
        "",
        *main_table(result),
        "",
    ]
    if chart is not None:
        lines += [f"![rows per second]({chart.name})", ""]
    lines += [
        "## Targets",
        "",
        "Issue 13's goals (numbered as there; 7 is the yardsticks above, 8 the profile below):",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {t} | {_cell(v)} | {_exact(ok)} |"
        for t, v, ok in targets.issue13_targets(result, result.scaling)
    ]
    lines += [
        "",
        "Earlier issues' targets:",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {t} | {_cell(v)} | {_exact(ok)} |" for t, v, ok in targets.earlier_targets(result)
    ]
    lines += [""]
    lines += small_partitions_section(result)
    lines += statements_section(result)
    lines += profile_section(result)
    lines += scaling_section(result)
    if result.fixed_cost:
        lines += ["## Fixed cost per partition", "", result.fixed_cost.note + ".", ""]
    if result.enqueue:
        lines += [
            "## Enqueueing",
            "",
            f"{result.enqueue.seconds:.2f} s: {result.enqueue.note}.",
            "",
        ]
    if result.frames:
        f = result.frames
        lines += [
            "## DataFrame memory (the largest partition)",
            "",
            f"Zip {f.zip_code}, {f.rows:,} rows:",
            "",
            "| representation | memory |",
            "| --- | ---: |",
            *(
                f"| {what} | {_mb(size)} |"
                for what, size in (
                    (
                        "object dtype (pandas < 3 default; what the seed blog measured)",
                        f.object_bytes,
                    ),
                    (
                        "pandas 3 default (`to_pandas()`, pyarrow-backed `str`)",
                        f.pandas_default_bytes,
                    ),
                    ("Arrow-backed (`pd.ArrowDtype`, what the transform gets)", f.arrow_bytes),
                    ("after `frames.downcast` (for a transform to call)", f.downcast_bytes),
                )
            ),
            "",
            f"Downcasting saves {f.saved_vs_object:.0%} against the object-dtype frame and "
            f"{f.saved_vs_arrow:.0%} against the Arrow-backed one; written back, the downcast "
            f"frame is {'identical' if f.lossless else '**not identical**'} to the original "
            "(lossless).",
            "",
        ]
    if result.memory:
        mem = result.memory
        lines += [
            "## Worker memory",
            "",
            "Peak RSS of a pool process per partition (`/proc` VmHWM, reset before each one), "
            "against the largest partition's DataFrame (Arrow-backed, as written). A "
            f"pool process right after start: {_mb(mem['idle_rss_bytes'])}; warm (highest "
            "peak over the one-row partitions: libraries, connections, allocator pools): "
            f"{_mb(mem['baseline_rss_bytes'])}.",
            "",
            "| line | peak RSS | largest frame | (peak − warm) / frame |",
            "| --- | ---: | ---: | ---: |",
            *(
                f"| {name} | {_mb(m['peak_rss_bytes'])} | {_mb(m['largest_frame_bytes'])} | "
                f"{m['ratio']:.2f} |"
                for name, m in mem["lines"].items()
            ),
            "",
        ]
    if result.paths:
        lines += [
            "## Read and write paths (one process, the same zips)",
            "",
            "| direction | path | seconds | rows/s | exact | note |",
            "| --- | --- | ---: | ---: | --- | --- |",
        ]
        for p in result.paths:
            lines.append(
                f"| {p.direction} | {p.name} | {p.seconds:.2f} | {p.rows_per_second:,.0f} | "
                f"{_exact(p.exact)} | {_cell(p.note)} |"
            )
        lines.append("")
    usage_rows = [line for line in [*result.lines, result.small] if line and line.usage]
    if usage_rows:
        lines += [
            "## Where the CPU went",
            "",
            "CPU seconds per million rows show what each row costs wherever it runs: the "
            "client processes (pool processes, psql, or the Celery worker and its pool) and "
            "Postgres (see above for which processes). Wall seconds and 'machine busy' depend "
            "on load; CPU per row much less.",
            "",
            "| line | wall s | client CPU s | postgres CPU s | client / postgres "
            "CPU s per 1M rows | postgres read / written | machine busy |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for line in usage_rows:
            u = line.usage
            assert u is not None
            rows = line.extra.get("measured_rows", line.rows) / 1e6
            pg = targets.postgres_cpu_per_million(line)
            lines.append(
                f"| {line.name} | {u.wall_seconds:.1f} | {u.client_cpu:.1f} | "
                f"{u.postgres_cpu if u.own_server else u.bench_backends_cpu:.1f} | "
                f"{u.client_cpu / rows:.1f} / {'-' if pg is None else f'{pg:.1f}'} | "
                f"{_mb(u.postgres_read_bytes)} / {_mb(u.postgres_write_bytes)} | "
                f"{u.share(u.machine_busy_cpu):.0%} |"
            )
        lines.append("")
    lines += [
        "## Machine and versions",
        "",
        f"- CPU: {m.get('cpu')}, {m.get('cores')} cores; {m.get('memory_gb')} GB RAM; "
        f"{m.get('os')}",
        f"- load average before: {_load(m.get('load_before'))}; "
        f"after: {_load(m.get('load_after'))}",
        f"- {m.get('postgres')}; {m.get('postgres_settings')}",
        f"- Redis {m.get('redis')}; Python {m.get('python')}",
        "- " + ", ".join(f"{k} {v}" for k, v in result.versions.items()),
        "",
    ]
    kept = kept_sections(path.read_text()) if path.exists() else []
    if kept:
        lines += [*kept, ""]
    path.write_text("\n".join(lines))


def _postgres_note(result: BenchResult) -> str:
    if result.machine.get("postgres_own"):
        return (
            "Postgres is a cluster of the benchmark's own (etl-bench started it, nothing else "
            "used it): its CPU is every one of its processes' CPU time (backends, WAL writer, "
            "checkpointer), per million rows of the line."
        )
    return (
        "Postgres is a shared server (--shared-postgres): its CPU per million rows counts "
        "the benchmark's backends only."
    )


def _load(value: object) -> str:
    if not isinstance(value, tuple | list):
        return "?"
    return " ".join(f"{v:.2f}" for v in value)


def write_chart(result: BenchResult, path: Path) -> bool:
    """A bar chart of rows/s per line; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    lines = list(reversed(result.lines))
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(lines) + 1.5))
    colors = ["#4c72b0" if line.exact else "#c44e52" for line in lines]
    labels = [line.name + (" *" if line.extrapolated else "") for line in lines]
    ax.barh(labels, [line.rows_per_second for line in lines], color=colors)
    pipe = result.line(PIPE)
    if pipe:
        ax.axvline(PIPE_SHARE_TARGET * pipe.rows_per_second, color="grey", linestyle="--")
        ax.text(
            PIPE_SHARE_TARGET * pipe.rows_per_second, len(lines) - 0.4,
            f" {PIPE_SHARE_TARGET} × pipe", color="grey", fontsize=8,
        )  # fmt: skip
    for i, line in enumerate(lines):
        ax.text(line.rows_per_second, i, f" {line.rows_per_second:,.0f}", va="center", fontsize=8)
    ax.set_xlabel("rows per second (red: output not exact; *: a subset, extrapolated)")
    ax.set_title(
        f"{result.raw.rows:,} rows, {result.options.procs} processes, "
        f"{result.machine.get('cores')} cores"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_scaling_chart(data: dict[str, Any], path: Path) -> bool:
    """Wall time per row and worker peak RSS against table rows; False without matplotlib
    or with fewer than two sizes recorded."""
    runs = sorted(data.get("runs", {}).values(), key=lambda r: r["rows"])
    if len(runs) < 2:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r["rows"] for r in runs]
    fig, (time_ax, rss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    time_ax.plot(rows, [r["microseconds_per_row"] for r in runs], marker="o")
    time_ax.set_ylabel("wall µs per row")
    rss_ax.plot(rows, [r["peak_rss_bytes"] / 1e6 for r in runs], marker="o", color="#c44e52")
    rss_ax.set_ylabel("worker peak RSS (MB)")
    for ax in (time_ax, rss_ax):
        ax.set_xscale("log")
        ax.set_xlabel("rows in the table")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"etl-worker, identity, {runs[0]['procs']} processes")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(result: BenchResult) -> None:
    o = result.options
    chart = o.chart if write_chart(result, o.chart) else None
    write_markdown(result, o.output, chart)
