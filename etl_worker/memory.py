"""Peak memory of this process, per partition.

On Linux, writing 5 to /proc/self/clear_refs resets the kernel's high-water mark (VmHWM),
so the peak read after a partition is that partition's peak, not the process's lifetime
peak. Elsewhere it falls back to getrusage's lifetime maximum.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak() -> None:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass


def _status_bytes(field: str) -> int | None:
    """A `kB` field of /proc/self/status (VmHWM, VmRSS) in bytes; None where unavailable."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _lifetime_peak() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_rss() -> int:
    """Peak resident set size in bytes since the last `reset_peak()` (where supported)."""
    return _status_bytes("VmHWM") or _lifetime_peak()


def current_rss() -> int:
    return _status_bytes("VmRSS") or _lifetime_peak()
