"""Settings: defaults, ETL_* variables, *_FILE secrets, overrides, and the checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl_worker import defaults
from etl_worker.config import Settings, env_var, redact_url
from etl_worker.errors import ConfigError
from etl_worker.units import parse_bytes


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings.load(environ={})
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/etl"
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.raw_table == "raw_companies"
    assert settings.target_table == "clean_companies"
    assert settings.partition_column == "zip_code"
    assert settings.transform == defaults.TRANSFORM


def test_environment_variables_override_defaults_and_flags_override_both() -> None:
    env = {"ETL_RAW_TABLE": "raw_x", "ETL_TASK_TIME_LIMIT": "60", "ETL_VISIBILITY_TIMEOUT": "90"}
    settings = Settings.load(environ=env, target_table="t_flag", raw_table=None)
    assert settings.raw_table == "raw_x"  # None means "not given on the command line"
    assert settings.target_table == "t_flag"
    assert settings.task_time_limit == 60
    assert settings.visibility_timeout == 90


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "db_url"
    secret.write_text("postgresql://app:s3cret@127.0.0.1/etl\n")
    settings = Settings.load(environ={"ETL_DATABASE_URL_FILE": str(secret)})
    assert settings.database_url == "postgresql://app:s3cret@127.0.0.1/etl"


def test_an_unreadable_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ETL_BROKER_URL_FILE: cannot read"):
        Settings.load(environ={"ETL_BROKER_URL_FILE": str(tmp_path / "missing")})


def test_visibility_timeout_must_exceed_the_task_time_limit() -> None:
    with pytest.raises(ConfigError, match="must exceed ETL_TASK_TIME_LIMIT"):
        Settings.load(environ={"ETL_TASK_TIME_LIMIT": "600", "ETL_VISIBILITY_TIMEOUT": "600"})


def test_a_malformed_number_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="ETL_MAX_ATTEMPTS='many' is not valid"):
        Settings.load(environ={"ETL_MAX_ATTEMPTS": "many"})


@pytest.mark.parametrize(("hard", "soft"), [(1800, 1740), (100, 90), (5, 4), (2, 1)])
def test_the_soft_time_limit_fires_before_the_hard_one(hard: int, soft: int) -> None:
    settings = Settings.load(environ={"ETL_TASK_TIME_LIMIT": str(hard)})
    assert settings.soft_time_limit == soft


@pytest.mark.parametrize(
    ("env", "seconds"),
    [
        ({}, 300),  # the default: 5 minutes under the 30-minute task limit
        ({"ETL_TASK_TIME_LIMIT": "60", "ETL_VISIBILITY_TIMEOUT": "90"}, 60),  # the lease
        ({"ETL_TASK_TIME_LIMIT": "400", "ETL_VISIBILITY_TIMEOUT": "500"}, 100),
        ({"ETL_WRITE_TIMEOUT": "90"}, 90),
    ],
)
def test_the_write_timeout_is_derived_from_the_lease_and_the_task_limit_unless_set(
    env: dict[str, str], seconds: float
) -> None:
    assert Settings.load(environ=env).write_timeout_seconds == seconds


@pytest.mark.parametrize("value", ["30", "1800"])
def test_a_write_timeout_must_outlast_the_lease_and_stay_under_the_task_limit(value: str) -> None:
    with pytest.raises(ConfigError, match=r"ETL_WRITE_TIMEOUT .* must be at least"):
        Settings.load(environ={"ETL_WRITE_TIMEOUT": value})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1000", 1000), ("512MB", 512_000_000), ("16GiB", 16 * 1024**3), ("1.5 KiB", 1536)],
)
def test_sizes_parse_with_decimal_and_binary_units(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_env_var_names_a_setting() -> None:
    assert env_var("partition_column") == "ETL_PARTITION_COLUMN"
