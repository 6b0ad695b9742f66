"""etl-bench needs the [bench] extra for its baselines, and says so before it starts."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from etl_worker.bench import baselines
from etl_worker.errors import EtlError


def test_a_missing_baseline_package_stops_the_benchmark_with_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec

    def without_sqlalchemy(name: str, *args: Any) -> Any:
        return None if name == "sqlalchemy" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_sqlalchemy)

    with pytest.raises(EtlError, match=r"sqlalchemy.*pip install 'etl-worker\[bench\]'"):
        baselines.check_installed()


def test_the_dev_install_has_every_baseline_package() -> None:
    baselines.check_installed()
