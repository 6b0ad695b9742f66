"""The broker a fleet runs on, Redis or RabbitMQ, and everything that depends on which.

`ETL_BROKER_URL`'s scheme chooses: `redis://` (the default) or `amqp://` (RabbitMQ). The rest
of the package asks this module, never a client library, what only one broker can answer:

- **Celery's configuration**: the transport options (timeouts and keepalives for both, the
  visibility timeout and key prefix for Redis, publisher confirms for RabbitMQ) and the
  queue (a plain list on Redis; on RabbitMQ a durable, replicated quorum queue with a
  delivery limit, bound to a topic exchange so Celery's native delayed delivery carries
  retries with a countdown: a quorum queue has no global QoS to let a worker hold them).
- **Is a task's message still anywhere** (the sweeper): Redis answers per message, from the
  queue lists and kombu's unacked hash. RabbitMQ cannot without taking messages off the
  queue (which counts as a delivery), and needs not: a message delivered to a worker that
  dies comes back the moment its connection closes, and its running attempt's expired
  lease sends it again anyway. What is left to find is a message that never reached the
  queue (a producer killed mid-send) or a queue that was lost: on RabbitMQ, a waiting
  partition is called lost when its queue holds no ready message at all (see
  `missing_task_ids`).
- **How long a queue is** (`etl-metrics`): Redis' LLEN and HLEN of the unacked hash;
  RabbitMQ's passive queue.declare (ready messages; no management plugin needed). Delivered
  messages are then counted from the workers' own replies (ops/metrics.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis
from amqp.exceptions import MessageNacked, NotFound
from celery import Celery
from kombu import Exchange, Producer, Queue

from etl_worker.config import Settings
from etl_worker.errors import ConfigError
from etl_worker.network import amqp_transport_options, redis_transport_options

REDIS = "redis"
AMQP = "amqp"
_SCHEMES = {
    "redis": REDIS,
    "rediss": REDIS,
    "redis+socket": REDIS,
    "amqp": AMQP,
    "amqps": AMQP,
    "pyamqp": AMQP,
}
#: Where the sweeper looked for a message it calls lost: (for its report line, for the
#: audit row's requeue reason).
LOST_WHERE = {
    REDIS: ("in no Redis queue", "in no Redis queue nor unacked set"),
    AMQP: ("in no RabbitMQ queue", "in no RabbitMQ queue (its queue held no ready message)"),
}
#: Messages read per LRANGE/HSCAN call while looking for task ids.
SCAN_CHUNK = 1000


def broker_kind(url: str) -> str:
    """REDIS or AMQP, from the URL's scheme; any other broker is refused in one line."""
    scheme = urlsplit(url).scheme.lower()
    try:
        return _SCHEMES[scheme]
    except KeyError:
        raise ConfigError(
            f"ETL_BROKER_URL scheme {scheme or '(none)'!r} is not supported: use redis:// "
            "(Redis) or amqp:// (RabbitMQ)"
        ) from None


def is_amqp(settings: Settings) -> bool:
    return broker_kind(settings.broker_url) == AMQP


# -- Celery's configuration ------------------------------------------------------------------


def transport_options(settings: Settings) -> dict[str, Any]:
    if is_amqp(settings):
        return {
            # Publisher confirms: a publish returns once RabbitMQ has the message (for a
            # quorum queue: on a majority of its replicas), or raises. Without them a
            # message on its way when the connection drops is lost silently, and
            # etl-enqueue would record the partition as sent.
            "confirm_publish": True,
            **amqp_transport_options(settings.network_timeout),
        }
    options: dict[str, Any] = {
        # Redis redelivers a message not acked this long after it was *fetched*. It must
        # exceed the task time limit, or a slow but healthy task gets a parallel twin.
        "visibility_timeout": settings.visibility_timeout,
        # Live workers put back messages unacked past the visibility timeout (a dead node's).
        # kombu scans every interval x throttle seconds, ~100 s by default whatever the
        # timeout; scan every min(10 s, timeout / 4) instead, so such a message is back at
        # most that long after its timeout. One ZRANGE per worker per interval.
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
    }
    # A broker gone silent (packets dropped, the socket still "established") is noticed
    # within ETL_NETWORK_TIMEOUT: keepalives, reply and connect timeouts, kombu's BRPOP
    # check (network.py). Then the worker cancels its running tasks and reconnects.
    options.update(redis_transport_options(settings.network_timeout))
    if settings.redis_key_prefix:
        # Every key (queues, unacked set, bindings, pidbox) under one prefix: fleets and test
        # runs sharing a Redis never see each other's messages.
        options["global_keyprefix"] = settings.redis_key_prefix
    return options


def queue_arguments(settings: Settings) -> dict[str, Any]:
    """RabbitMQ arguments of every partition queue. Every party declares the queue with
    these, and RabbitMQ refuses a declaration whose arguments differ from the queue's: they
    depend on ETL_DELIVERY_LIMIT alone, which the whole fleet shares."""
    return {
        # Durable and replicated (Raft): survives a broker restart and, in a cluster, the
        # loss of a minority of nodes. Publisher confirms wait for a majority.
        "x-queue-type": "quorum",
        # A second guard against a poison message, behind the audit table's attempt count
        # (ETL_MAX_ATTEMPTS): RabbitMQ drops a message returned this many times, including
        # returns no attempt counted (one that kills the worker before it records anything).
        "x-delivery-limit": settings.delivery_limit,
    }


def task_queue(settings: Settings, name: str | None = None) -> Queue:
    """The kombu queue of `name` (default: ETL_QUEUE) on a RabbitMQ broker: a quorum queue
    bound to a topic exchange of the same name (native delayed delivery binds that
    exchange, see the module docstring)."""
    name = name or settings.queue
    return Queue(
        name,
        Exchange(name, type="topic"),
        routing_key=name,
        queue_arguments=queue_arguments(settings),
    )


def celery_options(settings: Settings) -> dict[str, Any]:
    """The broker-specific part of Celery's configuration (celery_app.py has the rest)."""
    if not is_amqp(settings):
        return {
            # One message per pool process, and none fetched while every process is busy
            # (Redis only, Celery >= 5.6): a message's visibility clock starts when it is
            # fetched, and a busy node must not sit on partitions an idle node could run.
            "worker_disable_prefetch": True,
        }
    return {
        "task_queues": [task_queue(settings)],
        # Queues made on the fly (the sweep queue, another run's queue) are quorum too.
        "task_create_missing_queue_type": "quorum",
        "task_default_exchange_type": "topic",
        # Quorum queues have no global QoS: Celery sees them in task_queues and uses a
        # per-consumer prefetch (pool size x 1), and native delayed delivery (countdowns
        # wait in RabbitMQ's celery_delayed_* queues, not unacked in a worker).
        "worker_detect_quorum_queues": True,
        "broker_native_delayed_delivery_queue_type": "quorum",
    }


def retry_countdown(settings: Settings, seconds: float) -> float:
    """The countdown to send a retry with. RabbitMQ's native delayed delivery counts whole
    seconds, from 1: kombu refuses a countdown that rounds down to 0 ("countdown must be a
    positive number"), and Celery then *rejects the message without requeueing it*, so the
    partition would wait for the sweeper's lost-message path. Round up instead."""
    if is_amqp(settings):
        return float(max(1, math.ceil(seconds)))
    return seconds


# -- publishing many messages (etl-enqueue, the sweeper) -------------------------------------

#: Messages per Redis pipeline flush, or published to RabbitMQ before waiting for their
#: confirms: a round trip per window, not per message.
PUBLISH_WINDOW = 1000


@contextmanager
def bulk_producer(app: Celery, settings: Settings) -> Iterator[tuple[Producer, Callable[[], None]]]:
    """A producer for many publishes, and what to call after each one.

    Redis: kombu (>= 5.7) buffers the publishes in a pipeline, flushed every window. RabbitMQ:
    publisher confirms in windows, on a channel of its own. With the `confirm_publish`
    transport option alone, py-amqp waits for each message's confirm before sending the
    next, and a quorum queue confirms only what it has written to disk: 40,000 tasks took
    about two minutes that way (tests.support.broker_bench). Here up to a window of messages
    is in flight, then all their confirms are awaited; a nack raises, as a single publish
    would. Leaving the block by an exception skips the wait: nothing was reported sent."""
    if not is_amqp(settings):
        with app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_WINDOW):
            yield producer, lambda: None
        return
    with app.connection_for_write() as conn:
        channel: Any = conn.channel()
        try:
            window = _ConfirmWindow(channel, settings.network_timeout)
            yield Producer(channel, auto_declare=False), window.sent
            window.wait()
        finally:
            channel.close()


class _ConfirmWindow:
    """Publisher confirms on a fresh py-amqp channel, awaited a window at a time. Its
    delivery tags count from 1 (the channel's first publish)."""

    def __init__(self, channel: Any, timeout: float) -> None:
        self.channel = channel
        self.timeout = timeout
        self.published = 0
        self.pending: set[int] = set()
        self.nacked = 0
        channel.events["basic_ack"].add(self._ack)
        channel.events["basic_nack"].add(self._nack)
        channel.confirm_select()
        channel._confirm_selected = True
        # py-amqp made basic_publish wait for each confirm (confirm_publish): publish at once
        # instead, and wait here.
        channel.basic_publish = channel._basic_publish

    def _settle(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.pending = {t for t in self.pending if t > tag}
        else:
            self.pending.discard(tag)

    def _ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple)

    def _nack(self, tag: int, multiple: bool) -> None:
        before = len(self.pending)
        self._settle(tag, multiple)
        self.nacked += before - len(self.pending)

    def sent(self) -> None:
        self.published += 1
        self.pending.add(self.published)
        if len(self.pending) >= PUBLISH_WINDOW:
            self.wait()

    def wait(self) -> None:
        while self.pending and not self.nacked:
            self.channel.connection.drain_events(timeout=self.timeout)
        if self.nacked:
            raise MessageNacked(f"RabbitMQ refused {self.nacked} message(s) (nack)")


# -- is a message still anywhere (the sweeper) -----------------------------------------------


def missing_task_ids(app: Celery, settings: Settings, waiting: Mapping[str, set[str]]) -> set[str]:
    """Of the task ids waiting in each queue (`waiting`: queue name -> ids of partitions
    queued or retrying long enough to be looked for), those whose message is nowhere.

    Redis: every id absent from the queue's lists and from the unacked hash. RabbitMQ: every
    id of a queue that holds no ready message (or no longer exists). A message a worker
    has taken is running (a started row, not waiting), or on its way to be: an attempt
    that claims it a moment after this reads the queue makes the sweep's re-send a duplicate
    delivery, which does nothing. A queue with messages still ready may hold any of
    them: nothing is called lost until it drains."""
    if not waiting:
        return set()
    if not is_amqp(settings):
        present = broker_task_ids(app, waiting)
        return {t for ids in waiting.values() for t in ids if t not in present}
    missing: set[str] = set()
    for queue, ids in waiting.items():
        ready = ready_messages(app, queue)
        if not ready:
            missing |= ids
    return missing


def ready_messages(app: Celery, queue: str) -> int:
    """Messages ready in a RabbitMQ queue (not delivered to a consumer), by a passive
    queue.declare: no management plugin needed. 0 when the queue does not exist."""
    with app.connection_for_read() as conn:
        channel: Any = conn.channel()
        try:
            ok = channel.queue_declare(queue=queue, passive=True)
        except NotFound:
            return 0  # the channel is closed by the broker; the connection is not
        finally:
            if channel.is_open:
                channel.close()
    return int(ok.message_count)


def broker_task_ids(app: Celery, queues: Iterable[str]) -> set[str]:
    """Redis: task ids of every message in the queues' lists (all priority levels) and in
    the transport's unacked hash (delivered, not yet acked: running, or waiting out a
    countdown).

    The unacked hash is read before and after the lists: a message moves list -> worker ->
    unacked in one step of the worker's loop, so it is in one of the three reads."""
    queue_names = sorted(set(queues))
    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        # A plain client on kombu's own pool: kombu's prefixing client rewrites only the
        # commands kombu uses, so this one adds the global key prefix itself, explicitly.
        client = redis.Redis(connection_pool=channel.client.connection_pool)
        prefix = getattr(channel, "global_keyprefix", "") or ""
        unacked = prefix + channel.unacked_key
        ids = _unacked_ids(client, unacked)
        for queue in queue_names:
            for priority in channel.priority_steps:
                ids |= _list_ids(client, prefix + channel._q_for_pri(queue, priority))
        ids |= _unacked_ids(client, unacked)
    return ids


def _task_id(raw: bytes | str) -> str | None:
    """The Celery task id in a raw kombu message (protocol 2 keeps it in the headers)."""
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    if isinstance(message, list) and message:  # an unacked entry: [message, exchange, key]
        message = message[0]
    headers = message.get("headers") if isinstance(message, dict) else None
    task_id = headers.get("id") if isinstance(headers, dict) else None
    return task_id if isinstance(task_id, str) else None


def _list_ids(client: redis.Redis, key: str) -> set[str]:
    ids: set[str] = set()
    start = 0
    while True:
        chunk: Any = client.lrange(key, start, start + SCAN_CHUNK - 1)
        ids.update(i for i in map(_task_id, chunk) if i)
        if len(chunk) < SCAN_CHUNK:
            return ids
        start += SCAN_CHUNK


def _unacked_ids(client: redis.Redis, key: str) -> set[str]:
    entries = (value for _tag, value in client.hscan_iter(key, count=SCAN_CHUNK))
    return {i for i in map(_task_id, entries) if i}


# -- how long a queue is (etl-metrics) -------------------------------------------------------


def queue_lengths(app: Celery, settings: Settings) -> tuple[int, int | None]:
    """(messages waiting in ETL_QUEUE, messages delivered and not yet acked). The second is
    None where the broker does not say (RabbitMQ without its management plugin): the
    caller counts the workers' own tasks instead."""
    if is_amqp(settings):
        return ready_messages(app, settings.queue), None
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        channel: Any = conn.default_channel
        # The channel's client adds the global key prefix, as the workers' does.
        queued = int(channel.client.llen(settings.queue))
        in_flight = int(channel.client.hlen(channel.unacked_key))
    return queued, in_flight
