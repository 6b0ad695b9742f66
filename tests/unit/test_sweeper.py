"""The sweeper's settings, schedule and message parsing, without any service."""

from __future__ import annotations

import json

import pytest

from etl_worker.brokers import _task_id
from etl_worker.celery_app import SWEEP_TASK_NAME, broker_transport_options, celery_config
from etl_worker.config import Settings
from etl_worker.errors import ConfigError
from etl_worker.sweeper import RunSweep, SweepResult


def test_timings_must_keep_their_order() -> None:
    with pytest.raises(ConfigError, match=r"ETL_SWEEP_AFTER \(100s\) must exceed"):
        Settings.load({}, task_time_limit=50, visibility_timeout=100, sweep_after=100)
    with pytest.raises(ConfigError, match="ETL_LEASE_SECONDS and ETL_RETRY_BACKOFF_MAX"):
        Settings.load({}, task_time_limit=5, visibility_timeout=10, lease_seconds=60)
    with pytest.raises(ConfigError, match="ETL_SWEEP_INTERVAL must be positive"):
        Settings.load({}, sweep_interval=0)


def test_a_message_counts_as_lost_only_after_the_visibility_timeout() -> None:
    default = Settings.load({})
    assert default.lost_message_after == default.visibility_timeout + 600
    assert Settings.load({"ETL_SWEEP_AFTER": "3000"}).lost_message_after == 3000
    short = Settings.load({}, task_time_limit=8, visibility_timeout=10, lease_seconds=4,
                          retry_backoff_max=3)  # fmt: skip
    assert short.lost_message_after == 610


def test_beat_sends_the_sweep_to_its_own_queue_every_interval() -> None:
    settings = Settings.load({}, queue="etl", sweep_interval=15)
    entry = celery_config(settings)["beat_schedule"]["etl-sweep"]
    assert entry == {
        "task": SWEEP_TASK_NAME,
        "schedule": 15,
        "options": {"queue": "etl.sweep", "expires": 15},
    }


def test_redis_restores_unacked_messages_soon_after_the_visibility_timeout() -> None:
    default = broker_transport_options(Settings.load({}))
    assert (default["unacked_restore_interval"], default["unacked_restore_throttle"]) == (10, 1)
    short = Settings.load({}, task_time_limit=8, visibility_timeout=10, lease_seconds=4,
                          retry_backoff_max=3)  # fmt: skip
    assert broker_transport_options(short)["unacked_restore_interval"] == 2


def test_task_ids_are_read_from_queued_messages_and_unacked_entries() -> None:
    message = {"body": "e30=", "headers": {"id": "abc", "task": "etl.process_partition"}}
    assert _task_id(json.dumps(message)) == "abc"
    assert _task_id(json.dumps([message, "etl", "etl"]).encode()) == "abc"
    assert _task_id(b"not json") is None
    assert _task_id(json.dumps({"headers": "odd"})) is None


def test_a_sweep_reports_one_line_per_run_and_cause() -> None:
    result = SweepResult(lost_after=3000)
    result.runs["r1"] = RunSweep("r1", expired=["00001", "NULL"], lost=["00009"])
    assert result.requeued == 3
    assert result.lines() == [
        "run r1: re-enqueued 2 partition(s) whose lease expired (worker died): 00001, NULL",
        "run r1: re-enqueued 1 partition(s) whose message was in no Redis queue after 3000s: 00009",
    ]
