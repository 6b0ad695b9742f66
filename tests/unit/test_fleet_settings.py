"""The fleet's settings reach Celery: the autoscaler class and the per-child memory limit."""

from __future__ import annotations

import pytest
from celery.utils.imports import symbol_by_name

from etl_worker.celery_app import celery_config
from etl_worker.config import Settings
from etl_worker.errors import ConfigError
from etl_worker.ops.autoscale import MemoryAwareAutoscaler


def test_fleet_sizes_are_read_from_the_environment_with_units() -> None:
    settings = Settings.load(
        {
            "ETL_PROCESS_MEMORY": "512MiB",
            "ETL_WORKER_MEMORY": "14GiB",
            "ETL_MAX_MEMORY_PER_CHILD": "1GiB",
            "ETL_METRICS_NAMESPACE": "Prod/Etl",
        }
    )

    assert settings.process_memory_bytes == 512 * 2**20
    assert settings.worker_memory_bytes == 14 * 2**30
    assert settings.max_memory_per_child_bytes == 2**30
    assert settings.metrics_namespace == "Prod/Etl"


def test_celery_gets_max_memory_per_child_in_kib_and_none_when_unset() -> None:
    limited = celery_config(Settings.load({"ETL_MAX_MEMORY_PER_CHILD": "1GiB"}))
    unlimited = celery_config(Settings.load({}))

    assert limited["worker_max_memory_per_child"] == 1024 * 1024
    assert unlimited["worker_max_memory_per_child"] is None


def test_the_worker_autoscaler_setting_names_the_memory_aware_autoscaler() -> None:
    path = celery_config(Settings.load({}))["worker_autoscaler"]

    assert symbol_by_name(path) is MemoryAwareAutoscaler


def test_a_process_memory_of_zero_is_refused() -> None:
    with pytest.raises(ConfigError, match="ETL_PROCESS_MEMORY must be positive"):
        Settings.load({"ETL_PROCESS_MEMORY": "0"})
