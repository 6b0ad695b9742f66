"""The issues' targets, checked against one benchmark's numbers: (target, measured, met).

`met` is None for a row that is there to compare, not to pass, and for a target whose part
did not run (`--only`): the row then says which part measures it.
"""

from __future__ import annotations

from typing import Any

from etl_worker.bench.measure import Line
from etl_worker.bench.runner import (
    ETL_CLEAN,
    ETL_IDENTITY,
    POOL_CLEAN,
    POOL_IDENTITY,
    BenchResult,
)

PIPE = "COPY pipe floor"
SEED = "seed-style script, no index"
SEED_INDEXED = "seed-style script"

# Earlier issues' targets.
PIPE_SHARE_TARGET = 0.4
SEED_SPEEDUP_TARGET = 20.0
FIXED_COST_TARGET_MS = 10.0
ENQUEUE_TARGET_SECONDS = 5.0
DOWNCAST_TARGET = 0.5
RSS_TARGET_FACTOR = 3.0
# Issue 13's goals, by number.
POOL_SHARE_TARGET = 1.0  # 1
PIPE_SHARE_IDENTITY = 0.6  # 2
PIPE_SHARE_CLEAN = 0.5  # 2
POSTGRES_CPU_FACTOR = 1.3  # 3
SMALL_PARTITIONS_PER_SECOND = 150.0  # 4
LINEAR_TOLERANCE = 0.15  # 5
STATUS_TARGET_SECONDS = 1.0  # 5

Check = tuple[str, str, bool | None]


def postgres_cpu_per_million(line: Line) -> float | None:
    """Postgres CPU seconds per million rows: the whole server when it is the benchmark's
    own, else the benchmark's backends only (a shared server's other work left out)."""
    u = line.usage
    if u is None or line.time_to_fail:
        return None
    rows = line.extra.get("measured_rows", line.rows) / 1e6
    if not rows:
        return None
    return (u.postgres_cpu if u.own_server else u.bench_backends_cpu) / rows


def _not_run(target: str, part: str) -> Check:
    return (target, f"not measured (etl-bench --only {part})", None)


def _share(label: str, line: Line | None, base: Line | None, goal: float, part: str) -> Check:
    if line is None or base is None or not base.rows_per_second:
        return _not_run(label, part)
    share = line.rows_per_second / base.rows_per_second
    exact = line.exact and base.exact
    note = "" if exact else " (an output was not exact)"
    return (label, f"{share:.2f}{note}", share >= goal and bool(exact))


def earlier_targets(result: BenchResult) -> list[Check]:
    pipe, ident = result.line(PIPE), result.line(ETL_IDENTITY)
    checks = [
        _share(f"identity ≥ {PIPE_SHARE_TARGET} × COPY pipe", ident, pipe, PIPE_SHARE_TARGET,
               "floors --only etl-worker"),
    ]  # fmt: skip
    for name in (SEED, SEED_INDEXED):
        seed = result.line(name)
        if seed is None:
            continue
        goal = f" ≥ {SEED_SPEEDUP_TARGET:.0f} ×" if name == SEED else " vs"
        label = f"identity{goal} {name}"
        if seed.time_to_fail:
            checks.append(
                (
                    label,
                    f"none: the script fails after {seed.seconds:.1f} s, writing no table",
                    None,
                )
            )
        elif ident is not None:
            speedup = ident.rows_per_second / seed.rows_per_second
            met = speedup >= SEED_SPEEDUP_TARGET if name == SEED else None
            checks.append((label, f"{speedup:.1f} ×", met))
    if result.fixed_cost:
        ms = result.fixed_cost.extra["ms_per_partition"]
        checks.append(
            (f"fixed cost ≤ {FIXED_COST_TARGET_MS:.0f} ms / partition", f"{ms:.2f} ms",
             ms <= FIXED_COST_TARGET_MS)
        )  # fmt: skip
    if result.enqueue:
        seconds, n = result.enqueue.seconds, result.enqueue.extra["partitions"]
        checks.append(
            (f"enqueue {n:,} tasks ≤ {ENQUEUE_TARGET_SECONDS:.0f} s", f"{seconds:.2f} s",
             seconds <= ENQUEUE_TARGET_SECONDS)
        )  # fmt: skip
    if result.frames:
        f = result.frames
        checks.append(
            (f"downcasting saves ≥ {DOWNCAST_TARGET:.0%} (vs object dtype), losslessly",
             f"{f.saved_vs_object:.0%}, lossless={f.lossless}",
             f.saved_vs_object >= DOWNCAST_TARGET and f.lossless)
        )  # fmt: skip
    if ETL_IDENTITY in result.memory.get("lines", {}):
        checks.append(_rss_check(result, ETL_IDENTITY))
    return checks


def _rss_check(result: BenchResult, name: str) -> Check:
    mem = result.memory["lines"][name]
    warm = result.memory["baseline_rss_bytes"] / 1e6
    return (
        f"{name}: peak RSS ≤ {RSS_TARGET_FACTOR:.0f} × largest frame + warm process",
        f"{mem['ratio']:.2f} × (+ {warm:,.1f} MB)",
        bool(mem["within_target"]),
    )


def issue13_targets(result: BenchResult, scaling: dict[str, Any] | None = None) -> list[Check]:
    """Goals 1-6 of issue 13 (goal 7 is the yardsticks themselves, goal 8 the profile)."""
    pipe = result.line(PIPE)
    ident, clean = result.line(ETL_IDENTITY), result.line(ETL_CLEAN)
    checks = [
        _share(f"1. identity ≥ {POOL_SHARE_TARGET} × Pool script", ident,
               result.line(POOL_IDENTITY), POOL_SHARE_TARGET, "pool --only etl-worker"),
        _share(f"1. clean ≥ {POOL_SHARE_TARGET} × Pool script", clean,
               result.line(POOL_CLEAN), POOL_SHARE_TARGET, "pool --only etl-worker"),
        _share(f"2. identity ≥ {PIPE_SHARE_IDENTITY} × COPY pipe", ident, pipe,
               PIPE_SHARE_IDENTITY, "floors --only etl-worker"),
        _share(f"2. clean ≥ {PIPE_SHARE_CLEAN} × COPY pipe", clean, pipe, PIPE_SHARE_CLEAN,
               "floors --only etl-worker"),
    ]  # fmt: skip
    pipe_cpu = postgres_cpu_per_million(pipe) if pipe else None
    for line, name in ((ident, "identity"), (clean, "clean")):
        label = f"3. Postgres CPU / 1M rows, {name} ≤ {POSTGRES_CPU_FACTOR} × COPY pipe's"
        cpu = postgres_cpu_per_million(line) if line else None
        if cpu is None or not pipe_cpu:
            checks.append(_not_run(label, "floors --only etl-worker"))
            continue
        ratio = cpu / pipe_cpu
        checks.append(
            (
                label,
                f"{ratio:.2f} × ({cpu:.2f} s vs {pipe_cpu:.2f} s)",
                ratio <= POSTGRES_CPU_FACTOR,
            )
        )
    label = f"4. ≥ {SMALL_PARTITIONS_PER_SECOND:.0f} partitions/s on small partitions"
    if result.small is None:
        checks.append(_not_run(label, "small-partitions"))
    else:
        rate = result.small.extra["partitions_per_second"]
        rt = result.round_trips.get("per_partition")
        trips = f"; {rt:.1f} round trips per partition" if rt is not None else ""
        checks.append(
            (
                label,
                f"{rate:,.1f}/s{trips}",
                rate >= SMALL_PARTITIONS_PER_SECOND and bool(result.small.exact),
            )
        )
    checks.extend(scaling_targets(scaling or {}))
    if ETL_CLEAN in result.memory.get("lines", {}):
        check = _rss_check(result, ETL_CLEAN)
        checks.append(("6. " + check[0], check[1], check[2]))
    else:
        checks.append(_not_run("6. clean: peak RSS ≤ 3 × largest frame + warm", "etl-worker"))
    return checks


def scaling_targets(scaling: dict[str, Any]) -> list[Check]:
    """Goal 5, from the scaling series (scaling.py) over every size measured so far."""
    runs = sorted(scaling.get("runs", {}).values(), key=lambda r: r["rows"])
    part = "etl-bench --scale 1000000,10000000,50000000"
    labels = (
        f"5. wall time per row within ±{LINEAR_TOLERANCE:.0%} from 1M to 50M rows",
        "5. worker peak RSS flat from 1M to 50M rows",
        f"5. etl-status on a 40,000-partition run < {STATUS_TARGET_SECONDS:.0f} s",
        "5. enqueue 40,000 zips of the 50M-row table (listing included)",
    )
    if len(runs) < 2:
        return [(label, f"not measured ({part})", None) for label in labels]
    per_row = [r["seconds"] / r["rows"] for r in runs]
    spread = max(per_row) / min(per_row) - 1
    rss = [r["peak_rss_bytes"] for r in runs]
    growth = max(rss) / min(rss) - 1
    sizes = ", ".join(f"{r['rows'] / 1e6:g}M" for r in runs)
    checks: list[Check] = [
        (labels[0], f"{spread:+.0%} max/min over {sizes} "
         f"({', '.join(f'{p * 1e6:.1f}' for p in per_row)} µs/row)", spread <= LINEAR_TOLERANCE),
        (labels[1], f"{growth:+.0%} max/min ({', '.join(f'{b / 1e6:,.0f}' for b in rss)} MB)",
         growth <= LINEAR_TOLERANCE),
    ]  # fmt: skip
    largest = runs[-1]
    status, partitions = largest["status_seconds"], largest["partitions"]
    checks.append(
        (labels[2], f"{status:.2f} s ({partitions:,} partitions, {largest['rows']:,} rows)",
         status < STATUS_TARGET_SECONDS if partitions >= 40_000 else None)
    )  # fmt: skip
    checks.append(
        (labels[3], f"{largest['enqueue_seconds']:.2f} s ({largest['enqueue_partitions']:,} "
         f"zips, {largest['rows']:,} rows)", None)
    )  # fmt: skip
    return checks
