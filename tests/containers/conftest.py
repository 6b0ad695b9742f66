"""Fixtures of the container tests: a Docker engine (skipped without one, except in CI,
where .ci/run starts it) and the project's image, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.compose import TEST_IMAGE, build_image, engine_answers


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The repository's Dockerfile built as TEST_IMAGE (layers cached between sessions)."""
    if not engine_answers():
        if os.environ.get("CI"):
            pytest.fail(
                "no Docker engine answers: .ci/run must start one (scripts/docker-engine.sh)"
            )
        pytest.skip("no Docker engine answers (scripts/docker-engine.sh starts one)")
    log: Path = tmp_path_factory.mktemp("image") / "build.log"
    build_image(TEST_IMAGE, log)
    return TEST_IMAGE
