"""Fixtures of the fault tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cgroups import MemoryLimit
from tests.support.runs import WaitingProducer
from tests.support.services import Stack


@pytest.fixture
def enqueue_and_wait(stack: Stack, tmp_path: Path) -> Iterator[Callable[..., WaitingProducer]]:
    """Start `etl-enqueue ARGS --wait` in the background (env: the stack's plus extras);
    anything still running is killed after the test."""
    started: list[WaitingProducer] = []

    def start(*args: str, **extra_env: str) -> WaitingProducer:
        log = tmp_path / f"producer{len(started)}.log"
        producer = WaitingProducer(stack.env | extra_env, args, log)
        started.append(producer)
        return producer

    yield start
    for producer in started:
        producer.stop()


@pytest.fixture
def memory_limit() -> Iterator[Callable[[int], MemoryLimit]]:
    """Make memory cgroups with a limit (the test skips where it cannot); removed after the
    test. Ask for it before `start_worker`, so the workers in it are stopped first."""
    made: list[MemoryLimit] = []

    def make(limit_bytes: int) -> MemoryLimit:
        made.append(MemoryLimit(limit_bytes))
        return made[-1]

    yield make
    for limit in made:
        limit.remove()
