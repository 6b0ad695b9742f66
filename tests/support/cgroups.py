"""A memory cgroup of a test's own, with a limit, for a real OOM kill: the kernel's OOM
killer acts on the processes started in it alone. A child of the test process's own memory
cgroup (v1 or v2), removed by `remove()`; tests skip where none can be made (not root,
cgroup v2 without the memory controller delegated)."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from etl_worker.memory import memory_cgroups


class MemoryLimit:
    def __init__(self, limit_bytes: int) -> None:
        reasons = []
        for parent in memory_cgroups():
            directory = parent.directory / f"etl-test-{uuid.uuid4().hex[:8]}"
            try:
                directory.mkdir()
            except OSError as exc:
                reasons.append(f"{parent.directory}: {exc.strerror}")
                continue
            try:
                (directory / parent.limit_file).write_text(str(limit_bytes))
            except OSError as exc:
                reasons.append(f"{directory / parent.limit_file}: {exc.strerror}")
                directory.rmdir()
                continue
            self.directory = directory
            self.cgroup = dataclasses.replace(parent, directory=directory)
            return
        pytest.skip("cannot make a memory cgroup with a limit here: " + "; ".join(reasons))

    def wrapper(self) -> list[str]:
        """A command prefix that moves the process into the cgroup, then runs the rest."""
        procs = str(self.directory / "cgroup.procs")
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs]

    def oom_kills(self) -> int | None:
        """The kernel's count of OOM kills in this cgroup."""
        return self.cgroup.oom_kills()

    def remove(self) -> None:
        """Remove the cgroup once the processes in it are gone (stop them first)."""
        deadline = time.monotonic() + 5
        while self.directory.exists():
            try:
                self.directory.rmdir()
            except OSError:  # busy: a process in it is still exiting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
