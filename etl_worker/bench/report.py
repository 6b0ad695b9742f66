"""BENCHMARKS.md and its chart, from a `BenchResult`: the table, the targets checked, the
machine, the versions and the exact command, so anyone can rerun it and compare."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from etl_worker.bench.measure import Line
from etl_worker.bench.runner import BenchResult

#: The issue's targets, checked against the measured numbers.
PIPE_SHARE_TARGET = 0.4
SEED_SPEEDUP_TARGET = 20.0
FIXED_COST_TARGET_MS = 10.0
ENQUEUE_TARGET_SECONDS = 5.0
DOWNCAST_TARGET = 0.5
RSS_TARGET_FACTOR = 3.0

PIPE = "COPY pipe floor"
SEED = "seed-style script, no index"
SEED_INDEXED = "seed-style script"
IDENTITY = "etl-worker, identity"


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (error messages may hold pipes or newlines)."""
    return text.replace("|", "\\|").replace("\n", " ")


def _exact(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "**no**")


def _ratio(line: Line, pipe: Line | None) -> str:
    if pipe is None or not pipe.rows_per_second:
        return "-"
    return f"{line.rows_per_second / pipe.rows_per_second:.2f}"


def _pg_share(line: Line) -> str:
    if line.usage is None:
        return "-"
    return f"{line.usage.share(line.usage.postgres_cpu):.0%}"


def main_table(result: BenchResult) -> list[str]:
    pipe = result.line(PIPE)
    megabytes = result.raw.megabytes
    rows = [
        "| line | seconds | rows/s | MB/s | × COPY pipe | exact | Postgres CPU | how |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for line in result.lines:
        mark = " (extrapolated)" if line.extrapolated else ""
        rows.append(
            f"| {line.name}{mark} | {line.seconds:,.1f} | {line.rows_per_second:,.0f} | "
            f"{megabytes / line.seconds if line.seconds else 0:,.1f} | {_ratio(line, pipe)} | "
            f"{_exact(line.exact)} | {_pg_share(line)} | {_cell(line.note)} |"
        )
    return rows


def targets(result: BenchResult) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each of the issue's targets; None = for comparison."""
    pipe, seed, ident = result.line(PIPE), result.line(SEED), result.line(IDENTITY)
    indexed = result.line(SEED_INDEXED)
    checks: list[tuple[str, str, bool | None]] = []
    if pipe and ident:
        share = ident.rows_per_second / pipe.rows_per_second
        checks.append(
            (
                f"identity ≥ {PIPE_SHARE_TARGET} × COPY pipe",
                f"{share:.2f}",
                share >= PIPE_SHARE_TARGET,
            )
        )
    for baseline, goal in ((seed, SEED_SPEEDUP_TARGET), (indexed, None)):
        if baseline and ident:
            speedup = ident.rows_per_second / baseline.rows_per_second
            label = (
                f"identity ≥ {goal:.0f} × {baseline.name}"
                if goal
                else f"identity vs {baseline.name}"
            )
            checks.append((label, f"{speedup:.1f} ×", None if goal is None else speedup >= goal))
    if result.fixed_cost:
        ms = result.fixed_cost.extra["ms_per_partition"]
        checks.append(
            (
                f"fixed cost ≤ {FIXED_COST_TARGET_MS:.0f} ms / partition",
                f"{ms:.2f} ms",
                ms <= FIXED_COST_TARGET_MS,
            )
        )
    if result.enqueue:
        seconds, n = result.enqueue.seconds, result.enqueue.extra["partitions"]
        checks.append(
            (
                f"enqueue {n:,} tasks ≤ {ENQUEUE_TARGET_SECONDS:.0f} s",
                f"{seconds:.2f} s",
                seconds <= ENQUEUE_TARGET_SECONDS,
            )
        )
    if result.frames:
        f = result.frames
        ok = f.saved_vs_object >= DOWNCAST_TARGET and f.lossless
        checks.append(
            (
                f"downcasting saves ≥ {DOWNCAST_TARGET:.0%} (vs object dtype), losslessly",
                f"{f.saved_vs_object:.0%}, lossless={f.lossless}",
                ok,
            )
        )
    for name, mem in result.memory.get("lines", {}).items():
        warm = _mb(result.memory["baseline_rss_bytes"])
        checks.append(
            (
                f"{name}: peak RSS ≤ {RSS_TARGET_FACTOR:.0f} × largest frame + warm process",
                f"{mem['ratio']:.2f} × (+ {warm})",
                bool(mem["within_target"]),
            )
        )
    return checks


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
        "on zip_code (as etl-enqueue creates it). MB/s is of the raw table. Postgres CPU is "
        "the share of all cores the postgres processes used during the line (shared server: "
        "includes anything else running).",
        "",
        *main_table(result),
        "",
    ]
    if chart is not None:
        lines += [f"![rows per second]({chart.name})", ""]
    lines += ["## Targets", "", "| target | measured | met |", "| --- | --- | --- |"]
    lines += [f"| {t} | {v} | {_exact(ok)} |" for t, v, ok in targets(result)]
    lines += [""]
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
                    ("after downcasting (what etl-worker holds before writing)", f.downcast_bytes),
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
            "against the largest partition's DataFrame (Arrow-backed, before downcasting). A "
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
    usage_rows = [line for line in result.lines if line.usage]
    if usage_rows:
        lines += [
            "## Where the CPU went",
            "",
            "CPU seconds per million rows show what each row costs wherever it runs: the "
            "client processes (pool processes or the Celery worker and its pool) and this "
            "benchmark's Postgres backends. Wall seconds and 'machine busy' depend on load; "
            "CPU per row much less.",
            "",
            "| line | wall s | client CPU s | postgres CPU s (ours) | client / postgres "
            "CPU s per 1M rows | postgres read / written | machine busy |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for line in usage_rows:
            u = line.usage
            assert u is not None
            rows = line.extra.get("measured_rows", line.rows) / 1e6
            lines.append(
                f"| {line.name} | {u.wall_seconds:.1f} | {u.client_cpu:.1f} | "
                f"{u.postgres_cpu:.1f} ({u.bench_backends_cpu:.1f}) | "
                f"{u.client_cpu / rows:.1f} / {u.bench_backends_cpu / rows:.1f} | "
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
    path.write_text("\n".join(lines))


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


def write_report(result: BenchResult) -> None:
    o = result.options
    chart = o.chart if write_chart(result, o.chart) else None
    write_markdown(result, o.output, chart)
