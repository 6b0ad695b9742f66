"""How long a connection may stay silent before it is given up, in each client library's
own terms: libpq's connection parameters (psycopg and ADBC) and the broker transports'
options (kombu with redis-py or py-amqp). `db.py` and `brokers.py` apply them to every
connection.

A network partition drops packets without a FIN or an RST, so both ends keep the socket
"established". Without these settings a read waiting for a reply waits forever, and data
that is never acknowledged is retransmitted for about 15 minutes (Linux's tcp_retries2),
holding a pool process until the task time limit kills it. With them, a silent peer is
declared dead within `seconds` (ETL_NETWORK_TIMEOUT), in three ways:

- TCP keepalive probes on idle sockets: the first after `keepalive_idle` seconds of
  silence, then one every `keepalive_interval`; `PROBES` unanswered probes end the socket;
- TCP_USER_TIMEOUT on sockets with unacknowledged data (a query or COPY sent into the void),
  where keepalives do not run;
- timeouts on connecting, and on every Redis command's reply (`socket_timeout`), plus
  kombu's own check of the BRPOP it keeps waiting on the broker (`health_check_interval`).
  (RabbitMQ: the keepalives and TCP_USER_TIMEOUT on py-amqp's socket, and a connect
  timeout; AMQP heartbeats stay at Celery's default, see `amqp_transport_options`.)
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass
from typing import Any

from kombu.transport.redis import Transport

#: Unanswered keepalive probes before the peer counts as dead: two, so a single probe lost on
#: a busy link does not end a healthy connection.
PROBES = 2
#: libpq treats a connect timeout below 2 s as 2 s.
LIBPQ_MIN_CONNECT_TIMEOUT = 2


@dataclass(frozen=True)
class DeadPeerTimeouts:
    """The per-socket timeouts that give up on a silent peer within `seconds`."""

    seconds: float

    @property
    def keepalive_idle(self) -> int:
        """Seconds of silence before the first probe (the kernel counts whole seconds)."""
        return max(1, int(self.seconds // (PROBES + 1)))

    @property
    def keepalive_interval(self) -> int:
        """Seconds between probes: idle + PROBES * interval stays within `seconds`."""
        return self.keepalive_idle

    @property
    def user_timeout_ms(self) -> int:
        """Longest time sent data may stay unacknowledged before the socket is closed."""
        return int(self.seconds * 1000)

    @property
    def connect_timeout(self) -> int:
        return max(LIBPQ_MIN_CONNECT_TIMEOUT, math.ceil(self.seconds))


def libpq_parameters(seconds: float) -> dict[str, int]:
    """libpq connection parameters (keyword or URI query) for psycopg and ADBC."""
    t = DeadPeerTimeouts(seconds)
    return {
        "keepalives": 1,
        "keepalives_idle": t.keepalive_idle,
        "keepalives_interval": t.keepalive_interval,
        "keepalives_count": PROBES,
        "tcp_user_timeout": t.user_timeout_ms,
        "connect_timeout": t.connect_timeout,
    }


def _tcp_options(t: DeadPeerTimeouts) -> dict[int, int]:
    """setsockopt(IPPROTO_TCP, ...) values; redis-py sets them when socket_keepalive is on.
    Options this platform lacks (TCP_USER_TIMEOUT is Linux only) are left out."""
    wanted = {
        "TCP_KEEPIDLE": t.keepalive_idle,
        "TCP_KEEPINTVL": t.keepalive_interval,
        "TCP_KEEPCNT": PROBES,
        "TCP_USER_TIMEOUT": t.user_timeout_ms,
    }
    return {getattr(socket, k): v for k, v in wanted.items() if hasattr(socket, k)}


def redis_transport_options(seconds: float) -> dict[str, Any]:
    """kombu Redis transport options (kombu 5.7 passes the socket ones to redis-py)."""
    t = DeadPeerTimeouts(seconds)
    return {
        "socket_connect_timeout": seconds,
        # A command's reply (an ack, a publish, a task event) overdue by this much means
        # the broker is gone. No Redis command we send legitimately takes this long; the
        # BRPOP a consumer waits on is answered by the server every brpop_timeout (1 s).
        "socket_timeout": seconds,
        # kombu passes socket_keepalive=None unless told, which turns off redis-py's own.
        "socket_keepalive": True,
        "socket_keepalive_options": _tcp_options(t),
        # kombu drops a BRPOP whose reply is overdue by brpop_timeout + this, checking every
        # this many seconds: a consumer on a dead link reconnects within
        # brpop_timeout + 2 * health_check_interval <= seconds. redis-py also PINGs a
        # connection idle this long before reusing it.
        "health_check_interval": max(1, int((seconds - Transport.brpop_timeout) // 2)),
    }


def amqp_transport_options(seconds: float) -> dict[str, Any]:
    """kombu pyamqp transport options (passed to py-amqp's Connection). py-amqp always turns
    SO_KEEPALIVE on, with its own TCP values (a first probe after 60 s, TCP_USER_TIMEOUT of
    1 s); `socket_settings` replaces them with ours. No read or write timeout: a consumer
    legitimately waits for messages for as long as the queue is empty. AMQP heartbeats
    stay at Celery's default (broker_heartbeat, 120 s): a client that sends none while
    idle (a producer between two runs) would have RabbitMQ close its connection."""
    return {
        "connect_timeout": seconds,
        "socket_settings": _tcp_options(DeadPeerTimeouts(seconds)),
    }
