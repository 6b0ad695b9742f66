"""load_transform: finding a transform by `module:function`, and saying clearly when it can't."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from etl_worker.errors import ConfigError
from etl_worker.transforms import clean_companies, identity, load_transform

UserModule = Callable[[str], str]
FRAME = pd.DataFrame({"zip_code": ["02134", "10001"], "employees": [3, 4]})


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> UserModule:
    """Write a module with the given source onto sys.path; return its (unique) name."""

    def write(source: str) -> str:
        name = f"user_transforms_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        return name

    return write


def test_load_transform_finds_the_builtin_transforms() -> None:
    assert load_transform("etl_worker.transforms:identity") is identity
    assert load_transform("etl_worker.transforms:clean_companies") is clean_companies


def test_load_transform_finds_a_function_in_a_user_module(user_module: UserModule) -> None:
    module = user_module("def double(df):\n    return df * 2\n")

    transform = load_transform(f"{module}:double")

    assert transform(FRAME).equals(FRAME * 2)


def test_load_transform_finds_a_module_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"cwd_transforms_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("def fn(df):\n    return df\n")
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)

    assert load_transform(f"{name}:fn")(FRAME) is FRAME
    assert sys.path == path_before


def test_load_transform_follows_a_dotted_attribute(user_module: UserModule) -> None:
    module = user_module(
        """
        class Cleaners:
            @staticmethod
            def head(df):
                return df.head(1)
        """
    )

    assert len(load_transform(f"{module}:Cleaners.head")(FRAME)) == 1


def test_load_transform_imports_each_spec_once(user_module: UserModule) -> None:
    module = user_module("def fn(df):\n    return df\n")
    first = load_transform(f"{module}:fn")
    hits = load_transform.cache_info().hits

    assert load_transform(f"{module}:fn") is first
    assert load_transform.cache_info().hits == hits + 1


def test_load_transform_names_the_missing_attribute() -> None:
    with pytest.raises(ConfigError) as error:
        load_transform("etl_worker.transforms:nope")

    assert str(error.value) == (
        "transform 'etl_worker.transforms:nope' not found: module 'etl_worker.transforms' "
        "has no attribute 'nope' — check --transform"
    )


def test_load_transform_names_the_missing_module() -> None:
    with pytest.raises(ConfigError, match="transform 'no_such_module_x:fn' not found: no module "
                       "named 'no_such_module_x' — check --transform"):  # fmt: skip
        load_transform("no_such_module_x:fn")


def test_load_transform_names_a_missing_parent_package() -> None:
    with pytest.raises(ConfigError, match="no module named 'no_such_pkg_x'"):
        load_transform("no_such_pkg_x.sub:fn")


def test_load_transform_tells_a_missing_dependency_from_a_missing_module(
    user_module: UserModule,
) -> None:
    module = user_module("import no_such_dependency_x\n")

    with pytest.raises(ConfigError) as error:
        load_transform(f"{module}:fn")

    assert f"could not be imported: module '{module}' needs 'no_such_dependency_x'" in str(
        error.value
    )


def test_load_transform_reports_an_error_raised_while_importing(user_module: UserModule) -> None:
    module = user_module("raise RuntimeError('bad config in module')\n")

    with pytest.raises(ConfigError, match="could not be imported: RuntimeError: bad config"):
        load_transform(f"{module}:fn")


def test_load_transform_rejects_something_that_is_not_callable() -> None:
    with pytest.raises(ConfigError) as error:
        load_transform("etl_worker.transforms:MAX_REVENUE")

    assert str(error.value) == (
        "transform 'etl_worker.transforms:MAX_REVENUE' is not callable: "
        "etl_worker.transforms.MAX_REVENUE is a Decimal — check --transform"
    )


@pytest.mark.parametrize("spec", ["etl_worker.transforms", ":identity", "etl_worker:", ""])
def test_load_transform_asks_for_module_colon_function(spec: str) -> None:
    with pytest.raises(ConfigError, match="is not 'module:function'"):
        load_transform(spec)


def test_load_transform_does_not_remember_failures(user_module: UserModule, tmp_path: Path) -> None:
    module = user_module("")
    with pytest.raises(ConfigError):
        load_transform(f"{module}:late")

    (tmp_path / f"{module}.py").write_text("def late(df):\n    return df\n")
    importlib.reload(sys.modules[module])

    assert load_transform(f"{module}:late")(FRAME) is FRAME
