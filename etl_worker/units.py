"""Sizes and durations as people write and read them: '16GiB' in a setting or a flag,
'1.5 KiB' and '1h02m05s' in a summary."""

from __future__ import annotations

import re

from etl_worker.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_bytes(text: str) -> int:
    """'16GiB' -> 17179869184, '512MB' -> 512000000, '1000' -> 1000."""
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"not a size: {text!r} (examples: 512MiB, 16GiB, 1000000)")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    scale = _UNITS[unit[:1]] if unit[:1] in _UNITS else 1
    if "i" in unit:
        scale = 1024 ** {"k": 1, "m": 2, "g": 3, "t": 4}[unit[0]]
    return int(number * scale)


def format_bytes(n: int | None) -> str:
    """1536 -> '1.5 KiB'; None or 0 -> '-'."""
    if not n:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def format_duration(seconds: float | None) -> str:
    """3725 -> '1h02m05s', 65 -> '1m05s'; None -> '-'."""
    if seconds is None:
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
