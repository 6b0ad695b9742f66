"""The charts of `etl-report`, drawn with matplotlib into PNG bytes.

Each chart takes the run's partitions as a DataFrame (one row per audit row, the columns of
the `run_partitions` query) and returns a PNG. Figures are made with `matplotlib.figure`
directly, not pyplot: no display, no global figure state, nothing left open.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from etl_worker.audit import State
from etl_worker.errors import EtlError

MIB = 1024**2
#: Throughput is drawn as about this many time buckets, whatever the run's length.
TIME_BUCKETS = 40
_NICE_SECONDS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400]
#: (unit, seconds per unit, used below this many seconds) for the throughput time axis.
_TIME_UNITS = [("seconds", 1.0, 180.0), ("minutes", 60.0, 3 * 3600.0), ("hours", 3600.0, math.inf)]
_BLUE, _ORANGE, _GREEN, _RED = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"


def _figure(width: float = 7.5, height: float = 3.6) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise EtlError(
            "etl-report draws its charts with matplotlib, which is not installed "
            "— pip install 'etl-worker[report]'"
        ) from exc
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _finished(parts: pd.DataFrame) -> pd.DataFrame:
    if parts.empty:
        return parts
    return parts[parts["state"] == State.FINISHED]


def bucket_seconds(span_seconds: float, buckets: int = TIME_BUCKETS) -> int:
    """A round bucket width (1 s, 2 s, 5 s, ... 1 day) giving about `buckets` buckets."""
    wanted = max(span_seconds, 1.0) / buckets
    return next((s for s in _NICE_SECONDS if s >= wanted), _NICE_SECONDS[-1])


def throughput_series(parts: pd.DataFrame) -> pd.DataFrame:
    """Rows per second and zips per minute finished in each time bucket since the first
    partition started: columns `seconds` (bucket start), `rows_per_second`, `zips_per_minute`."""
    done = _finished(parts)
    columns = ["seconds", "rows_per_second", "zips_per_minute"]
    if done.empty:
        return pd.DataFrame(columns=columns)
    start = pd.to_datetime(parts["started_at"], utc=True).min()
    offsets = (pd.to_datetime(done["finished_at"], utc=True) - start).dt.total_seconds()
    width = bucket_seconds(float(offsets.max()))
    index = (offsets // width).astype(int)
    count = int(index.max()) + 1
    rows = np.bincount(index, weights=done["rows_read"].fillna(0).astype(float), minlength=count)
    zips = np.bincount(index, minlength=count)
    return pd.DataFrame(
        {
            "seconds": np.arange(count) * float(width),
            "rows_per_second": rows / width,
            "zips_per_minute": zips * 60.0 / width,
        }
    )


def _chart(
    parts: pd.DataFrame, needed: list[str], draw: Callable[[Any, pd.DataFrame], None]
) -> bytes:
    """A PNG of `draw(axes, finished partitions with `needed` columns set)`, or of a
    placeholder while no partition has finished."""
    fig = _figure()
    ax = fig.subplots()
    done = _finished(parts)
    done = done.dropna(subset=needed) if not done.empty else done
    if done.empty:
        ax.text(
            0.5,
            0.5,
            "no partition has finished yet",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="grey",
        )
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        draw(ax, done)
    return _png(fig)


def _rows_axis(ax: Any, rows: pd.Series) -> pd.Series:
    """Rows on the x axis, logarithmic when zips differ in size by more than 50x (they
    usually do). Returns the rows clipped to 1, which a log axis can show."""
    rows = rows.astype(float).clip(lower=1)
    if rows.max() > 50 * rows.min():
        ax.set_xscale("log")
    ax.set_xlabel("rows in the partition")
    return rows


def _throughput(ax: Any, done: pd.DataFrame) -> None:
    series = throughput_series(done)
    span = float(series["seconds"].iloc[-1])
    unit, scale = next((u, d) for u, d, limit in _TIME_UNITS if span < limit)
    x = series["seconds"] / scale
    ax.step(x, series["rows_per_second"], where="post", color=_BLUE)
    ax.fill_between(x, series["rows_per_second"], step="post", alpha=0.2, color=_BLUE)
    ax.set_xlabel(f"{unit} since the first partition started")
    ax.set_ylabel("rows/s", color=_BLUE)
    ax.set_ylim(bottom=0)
    zips = ax.twinx()
    zips.step(x, series["zips_per_minute"], where="post", color=_ORANGE)
    zips.set_ylabel("zips/min", color=_ORANGE)
    zips.set_ylim(bottom=0)
    ax.set_title("Throughput over time")


def _rows_per_zip(ax: Any, done: pd.DataFrame) -> None:
    rows = _rows_axis(ax, done["rows_read"])
    if ax.get_xscale() == "log":  # log-spaced bins, so each bar is as wide on the axis
        bins: Any = np.logspace(math.log10(rows.min()), math.log10(rows.max()) + 1e-9, 30)
    else:
        bins = min(30, max(5, len(rows)))
    ax.hist(rows, bins=bins, color=_BLUE, edgecolor="white")
    ax.set_ylabel("partitions")
    ax.set_title(f"Rows per zip ({len(rows):,} finished partitions)")


def _duration_vs_rows(ax: Any, done: pd.DataFrame) -> None:
    ax.scatter(_rows_axis(ax, done["rows_read"]), done["duration_seconds"], s=10, alpha=0.6)
    ax.set_ylabel("seconds (read + transform + write)")
    ax.set_ylim(bottom=0)
    ax.set_title("Duration vs rows")


def _memory(ax: Any, done: pd.DataFrame) -> None:
    x = _rows_axis(ax, done["rows_read"])
    for column, label, color in (
        ("peak_rss_bytes", "worker process peak RSS", _RED),
        ("memory_before_bytes", "transform output", _ORANGE),
        ("memory_after_bytes", "after downcasting", _GREEN),
    ):
        ax.scatter(x, done[column].astype(float) / MIB, s=10, alpha=0.6, label=label, color=color)
    # A process's RSS (the interpreter, pandas, pyarrow) dwarfs a small zip's frame: on a
    # log axis both stay readable.
    ax.set_yscale("log")
    ax.set_ylabel("MiB")
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title("Memory per zip")


def throughput_chart(parts: pd.DataFrame) -> bytes:
    return _chart(parts, ["finished_at"], _throughput)


def rows_per_zip_chart(parts: pd.DataFrame) -> bytes:
    return _chart(parts, ["rows_read"], _rows_per_zip)


def duration_vs_rows_chart(parts: pd.DataFrame) -> bytes:
    return _chart(parts, ["rows_read", "duration_seconds"], _duration_vs_rows)


def memory_chart(parts: pd.DataFrame) -> bytes:
    return _chart(parts, ["rows_read"], _memory)


#: (anchor, title, what it shows, chart function), in the order the report shows them.
CHARTS = [
    ("throughput", "Throughput over time", "rows/s and zips/min finished", throughput_chart),
    ("rows-per-zip", "Rows per zip", "how the work is spread over zips", rows_per_zip_chart),
    ("duration", "Duration vs rows", "seconds per partition by size", duration_vs_rows_chart),
    ("memory", "Memory per zip", "frame sizes and peak RSS by size", memory_chart),
]
