"""ETL_NETWORK_TIMEOUT becomes each client's keepalive and timeout options, bounded by it,
and reaches the places that open connections: libpq conninfo, the Redis transport."""

from __future__ import annotations

import socket

import pytest
from kombu.transport.redis import Transport
from psycopg.conninfo import conninfo_to_dict

from etl_worker.celery_app import broker_transport_options
from etl_worker.config import Settings
from etl_worker.db import conninfo
from etl_worker.errors import ConfigError
from etl_worker.network import PROBES, libpq_parameters, redis_transport_options


@pytest.mark.parametrize("seconds", [3, 3.5, 4, 7, 15, 20, 60])
def test_a_silent_peer_is_given_up_within_the_network_timeout(seconds: float) -> None:
    pg = libpq_parameters(seconds)
    assert pg["keepalives"] == 1
    assert pg["keepalives_count"] == PROBES == 2
    # Idle socket: first probe after keepalives_idle, then PROBES probes, interval apart.
    idle_detection = pg["keepalives_idle"] + pg["keepalives_count"] * pg["keepalives_interval"]
    assert 0 < idle_detection <= seconds
    # Socket with unacknowledged data: TCP_USER_TIMEOUT, in milliseconds.
    assert pg["tcp_user_timeout"] == int(seconds * 1000)
    assert pg["connect_timeout"] >= seconds

    redis = redis_transport_options(seconds)
    assert redis["socket_timeout"] == redis["socket_connect_timeout"] == seconds
    assert redis["socket_keepalive"] is True
    tcp = redis["socket_keepalive_options"]
    assert tcp[socket.TCP_KEEPIDLE] + tcp[socket.TCP_KEEPCNT] * tcp[socket.TCP_KEEPINTVL] <= seconds
    assert tcp[socket.TCP_USER_TIMEOUT] == int(seconds * 1000)
    # kombu drops a BRPOP with no reply within brpop_timeout + 2 * health_check_interval.
    assert 1 <= Transport.brpop_timeout + 2 * redis["health_check_interval"] <= seconds


def test_the_default_gives_up_on_a_silent_peer_in_15_seconds_a_quarter_of_the_lease() -> None:
    settings = Settings.load({})
    assert settings.network_timeout == 15
    assert settings.network_timeout <= settings.lease_seconds / 4
    assert libpq_parameters(settings.network_timeout) == {
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 5,
        "keepalives_count": 2,
        "tcp_user_timeout": 15000,
        "connect_timeout": 15,
    }


def test_a_network_timeout_below_three_seconds_is_refused() -> None:
    with pytest.raises(ConfigError, match="ETL_NETWORK_TIMEOUT"):
        Settings.load({"ETL_NETWORK_TIMEOUT": "2"})


def test_the_heartbeat_gives_up_within_half_a_lease_whatever_the_network_timeout() -> None:
    assert Settings.load({"ETL_LEASE_SECONDS": "20"}).heartbeat_network_timeout == 10
    assert Settings.load({"ETL_LEASE_SECONDS": "600"}).heartbeat_network_timeout == 15
    # Never below what keepalives can do (whole seconds), however short the lease.
    assert Settings.load({"ETL_LEASE_SECONDS": "2"}).heartbeat_network_timeout == 3


def test_postgres_conninfo_carries_the_parameters_unless_the_url_sets_them() -> None:
    plain = conninfo_to_dict(conninfo("postgresql://u:pw@db.example:5433/etl", 6))
    assert plain | {"keepalives_idle": "2", "tcp_user_timeout": "6000"} == plain
    assert plain["user"] == "u" and plain["password"] == "pw" and plain["dbname"] == "etl"

    url = "postgresql://db.example/etl?keepalives_idle=30&connect_timeout=4"
    chosen = conninfo_to_dict(conninfo(url, 6, application_name="etl-worker"))
    assert chosen["keepalives_idle"] == "30"  # the operator's choice wins
    assert chosen["connect_timeout"] == "4"
    assert chosen["tcp_user_timeout"] == "6000"
    assert chosen["application_name"] == "etl-worker"


def test_the_broker_transport_options_carry_the_settings_network_timeout() -> None:
    options = broker_transport_options(Settings.load({"ETL_NETWORK_TIMEOUT": "9"}))
    assert options["socket_timeout"] == 9
    assert options["socket_keepalive_options"][socket.TCP_USER_TIMEOUT] == 9000
    assert options["health_check_interval"] == 4
