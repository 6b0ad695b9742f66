"""Which broker a URL selects, and the Celery configuration each gets, without any service."""

from __future__ import annotations

import socket

import pytest

from etl_worker.brokers import AMQP, REDIS, broker_kind, task_queue
from etl_worker.celery_app import celery_config
from etl_worker.config import Settings
from etl_worker.errors import ConfigError

RABBIT = "amqp://guest:guest@127.0.0.1:5672/etl"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:6379/0", REDIS),
        ("rediss://:pw@cache.example:6380/1", REDIS),
        (RABBIT, AMQP),
        ("amqps://user:pw@mq.example/etl", AMQP),
        ("pyamqp://guest@localhost//", AMQP),
    ],
)
def test_the_url_scheme_selects_the_broker(url: str, kind: str) -> None:
    assert broker_kind(url) == kind


def test_another_broker_is_refused_in_one_line() -> None:
    # Settings refuses it first, with the forms it accepts; broker_kind refuses it too for
    # a URL that never went through Settings.
    with pytest.raises(ConfigError, match=r"is not a broker URL \(sqs://\) — use redis://"):
        celery_config(Settings.load({}, broker_url="sqs://key@queue"))
    with pytest.raises(ConfigError, match=r"scheme 'sqs' is not supported: use redis:// \(Redis\)"):
        broker_kind("sqs://key@queue")


def test_rabbitmq_gets_quorum_queues_publisher_confirms_and_no_redis_options() -> None:
    settings = Settings.load({"ETL_BROKER_URL": RABBIT, "ETL_QUEUE": "etl-x"})
    config = celery_config(settings)

    [queue] = config["task_queues"]
    assert (queue.name, queue.routing_key) == ("etl-x", "etl-x")
    assert (queue.exchange.name, queue.exchange.type) == ("etl-x", "topic")
    assert queue.durable
    assert queue.queue_arguments == {"x-queue-type": "quorum", "x-delivery-limit": 20}
    assert config["task_create_missing_queue_type"] == "quorum"
    assert config["worker_detect_quorum_queues"] is True
    assert "worker_disable_prefetch" not in config  # Redis only: Celery warns otherwise
    options = config["broker_transport_options"]
    assert options["confirm_publish"] is True
    assert options["connect_timeout"] == 15.0
    assert options["socket_settings"][socket.TCP_KEEPIDLE] == 5
    assert not {"visibility_timeout", "global_keyprefix", "socket_timeout"} & set(options)
    # The acks_late semantics are the same on both brokers.
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_cancel_long_running_tasks_on_connection_loss"]


def test_redis_keeps_its_own_options_and_no_queue_arguments() -> None:
    config = celery_config(Settings.load({}, redis_key_prefix="p:"))
    assert "task_queues" not in config
    assert config["worker_disable_prefetch"] is True
    assert config["broker_transport_options"]["global_keyprefix"] == "p:"
    assert "confirm_publish" not in config["broker_transport_options"]


def test_every_party_declares_the_queue_with_the_same_arguments() -> None:
    # RabbitMQ refuses a declaration whose arguments differ from the queue's: a worker with
    # fewer attempts than the producer must still declare the same queue.
    producer = Settings.load({"ETL_BROKER_URL": RABBIT})
    worker = Settings.load({"ETL_BROKER_URL": RABBIT, "ETL_MAX_ATTEMPTS": "2"})
    assert task_queue(producer).queue_arguments == task_queue(worker).queue_arguments


def test_the_delivery_limit_must_exceed_the_attempts() -> None:
    with pytest.raises(ConfigError, match=r"ETL_DELIVERY_LIMIT \(4\) must exceed ETL_MAX_ATTEMPTS"):
        Settings.load({"ETL_DELIVERY_LIMIT": "4"})
    assert Settings.load({"ETL_DELIVERY_LIMIT": "5"}).delivery_limit == 5
