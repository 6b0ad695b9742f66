"""Memory: the peak of this process per partition, what the machine has free, and how many
processes of this cgroup the kernel's OOM killer killed.

On Linux, writing 5 to /proc/self/clear_refs resets the kernel's high-water mark (VmHWM),
so the peak read after a partition is that partition's peak, not the process's lifetime
peak. Elsewhere it falls back to getrusage's lifetime maximum.

Free memory is the smaller of the machine's MemAvailable and the room left under this
process's cgroup limit: inside a container with `--memory 4g`, /proc/meminfo still shows
the whole host, and a pool sized from it would be OOM-killed by the cgroup.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")
#: Peak growth over a partition above which the freed memory is handed back to the OS.
RELEASE_AFTER_BYTES = 16 * 1024**2


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


_LIBC = _glibc()
_CGROUP_ROOT = Path("/sys/fs/cgroup")


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


def children_rss() -> int:
    """Resident memory of this process's children (a Celery worker's pool processes)."""
    total = 0
    for child in psutil.Process().children():
        try:
            total += child.memory_info().rss
        except psutil.Error:  # exited meanwhile
            pass
    return total


def available_memory() -> int:
    """Bytes that can still be allocated here: MemAvailable, or less under a cgroup limit."""
    free = int(psutil.virtual_memory().available)
    room = cgroup_room()
    return free if room is None else min(free, room)


@dataclass(frozen=True)
class MemoryCgroup:
    """A memory cgroup's directory and the names of its files, which differ between v1
    and v2."""

    directory: Path
    limit_file: str
    usage_file: str
    #: The memory.stat field of page cache the kernel can drop.
    reclaimable: str
    #: Where the kernel counts the processes its OOM killer killed (`oom_kill N`).
    events_file: str

    def read(self, name: str) -> str:
        return (self.directory / name).read_text()

    def oom_kills(self) -> int | None:
        """How many of its processes the kernel's OOM killer has killed; None where the
        kernel keeps no count."""
        for line in self.read(self.events_file).splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
        return None


def memory_cgroups(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = _CGROUP_ROOT
) -> list[MemoryCgroup]:
    """This process's memory cgroup as each hierarchy in /proc/self/cgroup names it (v2's
    unified one, v1's memory controller), in that file's order; [] when unreadable."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: one unified hierarchy
            found.append(
                MemoryCgroup(
                    _own(root, path),
                    "memory.max",
                    "memory.current",
                    "inactive_file",
                    "memory.events",
                )
            )
        elif "memory" in controllers.split(","):
            found.append(
                MemoryCgroup(
                    _own(root / "memory", path),
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                    "total_inactive_file",
                    "memory.oom_control",
                )
            )
    return found


def _own(mount: Path, path: str) -> Path:
    """This process's cgroup directory under `mount`: at its path, or the mount itself where
    the path is not there. A container without a cgroup namespace of its own (Docker on
    cgroup v1) sees the host's path in /proc/self/cgroup but only its own cgroup mounted."""
    directory = mount / path.lstrip("/")
    return directory if directory.is_dir() else mount


def cgroup_room(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = _CGROUP_ROOT
) -> int | None:
    """Limit minus the memory in use (page cache that can be dropped not counted) of this
    process's memory cgroup, v2 or v1; None without a limit."""
    return _first(_room, proc_cgroup, root)


def cgroup_limit(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = _CGROUP_ROOT
) -> int | None:
    """This process's memory cgroup limit in bytes; None without one."""
    return _first(lambda cgroup: _limit(cgroup.read(cgroup.limit_file)), proc_cgroup, root)


def oom_kill_count(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = _CGROUP_ROOT
) -> int | None:
    """How many processes of this process's memory cgroup the kernel's OOM killer has
    killed (the cgroup's own limit or the whole machine out of memory); None where no
    count is readable (no cgroup files, or a kernel older than 4.13 on cgroup v1)."""
    return _first(MemoryCgroup.oom_kills, proc_cgroup, root)


def _first(read: Callable[[MemoryCgroup], int | None], proc_cgroup: Path, root: Path) -> int | None:
    """`read` of the first of this process's memory cgroups where it finds a value."""
    for cgroup in memory_cgroups(proc_cgroup, root):
        try:
            value = read(cgroup)
        except (OSError, ValueError):
            continue
        if value is not None:
            return value
    return None


def process_rss(pid: int) -> int | None:
    """Resident memory of another process (a pool process, seen from its worker's main
    process); None once it is gone."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


def _limit(text: str) -> int | None:
    text = text.strip()
    if text == "max":
        return None
    limit = int(text)
    if limit >= psutil.virtual_memory().total:  # "unlimited" (v1 shows a huge number)
        return None
    return limit


def _room(cgroup: MemoryCgroup) -> int | None:
    limit = _limit(cgroup.read(cgroup.limit_file))
    if limit is None:
        return None
    usage = int(cgroup.read(cgroup.usage_file))
    stats = dict(line.split() for line in cgroup.read("memory.stat").splitlines())
    return max(0, limit - (usage - int(stats.get(cgroup.reclaimable, 0))))


def release_free_memory() -> None:
    """Give memory freed after a big partition back to the OS. glibc keeps freed heap pages
    for reuse, so without this a pool process stays at its largest partition's peak between
    partitions, and its next peak starts from there (measured: 271 MB kept after a 70 MB
    frame, 223 MB with it, against 159 MB warm)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def use_system_allocator() -> None:
    """Allocate Arrow buffers with the C library's malloc instead of pyarrow's default
    (mimalloc), so `release_free_memory()` can hand them back too. mimalloc keeps freed
    segments for reuse: a pool process stayed 58 MB higher after a 70 MB partition than
    with malloc + malloc_trim, and every later partition's peak started from there."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
