"""fingerprint: the allow-list of transform modules, and the fingerprint of a transform."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from etl_worker.config import Settings
from etl_worker.errors import ConfigError, TransformNotAllowed
from etl_worker.fingerprint import (
    allowed_modules,
    check_allowed,
    fingerprint_of,
    is_allowed,
    load_checked,
)
from etl_worker.transforms import identity


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path


def test_the_shipped_transforms_are_always_allowed_and_the_operator_adds_prefixes() -> None:
    assert allowed_modules(()) == ("etl_worker.transforms",)
    assert allowed_modules(("acme.etl", " ", "etl_worker.transforms")) == (
        "etl_worker.transforms",
        "acme.etl",
    )


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("acme", True),
        ("acme.etl", True),
        ("acme.etl.deep", True),
        ("acmeevil", False),  # a prefix is a package, not a string prefix
        ("os", False),
        ("etl_worker.transforms", True),
        ("etl_worker.db", False),
    ],
)
def test_a_module_is_allowed_when_it_is_a_listed_package_or_inside_one(
    module: str, allowed: bool
) -> None:
    assert is_allowed(module, allowed_modules(("acme",))) is allowed


def test_a_module_off_the_list_is_refused_before_it_is_imported(module_dir: Path) -> None:
    name = f"trap_{uuid.uuid4().hex[:8]}"
    (module_dir / f"{name}.py").write_text("raise SystemExit('imported!')\ndef f(df): return df\n")
    with pytest.raises(TransformNotAllowed, match="ETL_TRANSFORM_MODULES") as refused:
        load_checked(f"{name}:f", allowed_modules(()))
    assert isinstance(refused.value, ConfigError)  # one line from the CLI
    assert name not in sys.modules
    check_allowed(f"{name}:f", allowed_modules((name,)))  # listed: fine


def test_the_fingerprint_follows_the_module_source(module_dir: Path) -> None:
    name = f"fp_{uuid.uuid4().hex[:8]}"
    path = module_dir / f"{name}.py"
    path.write_text("def f(df):\n    return df\n")
    loaded = load_checked(f"{name}:f", (name,))
    assert loaded.fingerprint is not None and loaded.fingerprint.startswith("sha256:")
    # Cached per process: the code loaded keeps its fingerprint after the file changes...
    path.write_text("def f(df):\n    return df.head(0)\n")
    assert load_checked(f"{name}:f", (name,)).fingerprint == loaded.fingerprint
    # ...while the file's own fingerprint (what etl-enqueue records) is new.
    assert fingerprint_of(f"{name}:f", sys.modules[name].f) != loaded.fingerprint


def test_the_shipped_transform_is_fingerprinted_by_its_source() -> None:
    fingerprint = fingerprint_of("etl_worker.transforms:identity", identity)
    assert fingerprint is not None and fingerprint.startswith("sha256:")


def test_etl_transform_modules_is_a_comma_separated_list() -> None:
    settings = Settings.load({"ETL_TRANSFORM_MODULES": "acme.etl, examples ,,"})
    assert settings.transform_modules == ("acme.etl", "examples")
    assert Settings.load({}).transform_modules == ()
