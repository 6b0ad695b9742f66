"""Hosts that lose each other: worker hosts in their own network namespaces reach the test's
own Postgres and Redis over veth links, and a link is cut mid-run the way networks fail,
silently (packets dropped, no FIN, no RST: half-open sockets), for longer than the lease and
the visibility timeout, then healed (tests/support/netns.py).

Host `a` is cut off (from Redis, from Postgres, or from both); host `b` stays connected; the
producer and its sweeper run in the root namespace. Each case: within a bound set by
ETL_NETWORK_TIMEOUT (etl_worker/network.py) `a`'s kernel has given up every connection
across the cut, and, cut off from Postgres, its attempts have said so; the zips it held
finish; the run finishes with no help; after the heal `a` takes work again. Then the target
holds every row exactly once (EXCEPT ALL both ways) and the audit says every zip finished.
Without the keepalives and timeouts the bound is missed (docs/reliability.md says by how
much).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

import psycopg
import pytest

from tests.support.data import audit_rows, make_raw_table, scalar
from tests.support.netns import Host, Network, require_network_namespaces
from tests.support.reliability import exactly_once
from tests.support.runs import SLOW, WaitingProducer, rows_in_state, start_run, wait_for_run_end
from tests.support.servers import PostgresCluster, RedisServer
from tests.support.services import Stack, Worker, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.network]

NETWORK_TIMEOUT = 3
#: Short timings in the order Settings requires; a dead link is given up within
#: NETWORK_TIMEOUT, half the lease.
NETWORK_TIMINGS = {
    "ETL_NETWORK_TIMEOUT": str(NETWORK_TIMEOUT),
    "ETL_LEASE_SECONDS": "6",
    "ETL_TASK_TIME_LIMIT": "12",
    "ETL_VISIBILITY_TIMEOUT": "14",
    "ETL_SWEEP_AFTER": "16",
    "ETL_SWEEP_INTERVAL": "1",
    "ETL_RETRY_BACKOFF_BASE": "0.5",
    "ETL_RETRY_BACKOFF_MAX": "3",
    "ETL_MAX_RETRIES": "20",
    "ETL_TEST_SLEEP": "2",
}
#: How long a link stays cut: longer than the lease (6 s) and the visibility timeout (14 s).
CUT_SECONDS = 16
#: The cut host must notice within this: its zip's transform (2 s), then one network
#: timeout, with room for a loaded machine. Below the task time limit (12 s), which would
#: otherwise end a stuck attempt: without keepalives and timeouts this bound is missed.
NOTICE_WITHIN = 2 + 2 * NETWORK_TIMEOUT
#: What a worker logs when an attempt loses the database (pipeline._record_failure).
DATABASE_LOST = "transient error, will retry"


@dataclass
class Lab:
    """Two worker hosts (namespaces `a` and `b`), the test's own Postgres and Redis on the
    bridge between them, and the processes the test starts."""

    network: Network
    cluster: PostgresCluster
    redis: RedisServer
    tmp_path: Path
    stack: Stack = field(init=False)
    processes: list[Worker | WaitingProducer] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The root namespace's view (127.0.0.1): the test itself and the producer.
        self.stack = Stack(self.cluster.url(), self.redis.url, "", "etl-net", NETWORK_TIMINGS)

    @property
    def url(self) -> str:
        return self.cluster.url()

    def start_worker(self, host: Host, concurrency: int) -> Worker:
        """A real `celery worker` running on `host`, reaching the servers over its link."""
        address = self.network.server_address
        env = self.stack.env | {
            "ETL_DATABASE_URL": self.cluster.url(address=address),
            "ETL_BROKER_URL": self.redis.url_at(address),
        }
        log = self.tmp_path / f"worker-{host.name}.log"
        worker = Worker(
            env, log, name=f"{host.name}@%h", concurrency=concurrency, wrapper=host.command()
        )
        self.processes.append(worker)
        return worker.wait_ready()

    def worker(self, host: str) -> Worker:
        return next(
            p for p in self.processes if isinstance(p, Worker) and p.name.startswith(host + "@")
        )

    def enqueue_and_wait(self, *args: str) -> WaitingProducer:
        producer = WaitingProducer(self.stack.env, args, self.tmp_path / "producer.log")
        self.processes.append(producer)
        return producer

    def stop(self) -> None:
        for process in self.processes:
            if isinstance(process, Worker):
                process.kill_group()  # no warm shutdown: a link may still be cut
            process.stop()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_network_namespaces()
    with ExitStack() as cleanup:
        network = cleanup.enter_context(Network(["a", "b"]))
        served = (network.server_address,)
        cluster = PostgresCluster(addresses=served, clients=str(network.subnet))
        cleanup.callback(cluster.stop)
        redis = RedisServer(tmp_path / "redis", persistent=True, addresses=served)
        cleanup.callback(redis.stop)
        lab = Lab(network, cluster, redis, tmp_path)
        cleanup.callback(lab.stop)
        yield lab


@dataclass(frozen=True)
class Cut:
    """One way of cutting host `a` off: the servers' ports it severs, how to cut and heal,
    and what `a`'s worker must log about it within NOTICE_WITHIN."""

    ports: tuple[int, ...]
    apply: Callable[[Host], None]
    undo: Callable[[Host], None]
    logged: tuple[str, ...] = ()


@dataclass
class Measured:
    #: The zips `a` held when it was cut off.
    held: dict[str | None, dict[str, object]]
    #: Seconds from the cut until `a`'s kernel had closed every connection open across the
    #: cut (keepalives, TCP user timeout, client timeouts), and until each line was logged.
    sockets_closed: float
    logged: dict[str, float]
    #: Seconds from the cut until the zips `a` held were finished (by either host).
    reclaimed: float
    #: How long the cut lasted (CUT_SECONDS, more when the second run was slow to enqueue).
    lasted: float
    #: Seconds from the heal until `a` started a zip again.
    back: float
    rows: dict[str | None, dict[str, object]]
    #: What host a's worker logged from the cut on.
    log: str


def zips_of(url: str, run_id: str, host: str, state: str) -> dict[str | None, dict[str, object]]:
    rows = audit_rows(url, run_id)
    return {
        k: r for k, r in rows.items() if r["state"] == state and str(r["worker"]).startswith(host)
    }


def claimed_since(url: str, host: str, since: datetime) -> bool:
    """Some zip's current attempt was started by `host` at `since` or later."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM etl.partitions WHERE worker LIKE %s AND started_at >= %s",
            (f"{host}@%", since),
        ).fetchone()
    return row is not None and row[0] > 0


def logged_since(worker: Worker, offset: int, line: str) -> bool:
    return line in worker.log()[offset:]


def watch(
    since: float,
    events: dict[str, tuple[float, Callable[[], object]]],
    seen: dict[str, float],
    until: float = math.inf,
) -> None:
    """Poll each event's condition until it holds, recording in `seen` the seconds since
    `since`; stop when all have happened or at `until` (monotonic). Fail the test when one
    has not happened within its own limit (seconds since `since`)."""
    while len(seen) < len(events) and time.monotonic() < until:
        for name, (limit, happened) in events.items():
            if name in seen:
                continue
            if happened():
                seen[name] = time.monotonic() - since
            elif time.monotonic() - since > limit:
                raise AssertionError(f"{name!r} did not happen within {limit} s of the cut")
        time.sleep(0.1)


def run_through_a_cut(lab: Lab, cut: Cut) -> Measured:
    """Run 12 zips on hosts `a` and `b` (2 processes each); once `a` holds a zip, cut it off
    for CUT_SECONDS, then heal it and send a second run, which `a` must take part in. Both
    runs must finish with every zip written once."""
    url = lab.url
    make_raw_table(url, zips=12, rows_per_zip=5)
    a_host = lab.network.host("a")
    a = lab.start_worker(a_host, concurrency=2)
    lab.start_worker(lab.network.host("b"), concurrency=2)
    producer = lab.enqueue_and_wait("--all-zips", "--transform", SLOW)
    run_id = producer.run_id
    held = wait_until(
        lambda: zips_of(url, run_id, "a@", "started"), timeout=60, what="host a to hold a zip"
    )
    assert isinstance(held, dict)

    open_at_cut = a_host.connections(*cut.ports)
    assert open_at_cut, "host a had no connection to cut"
    log_at_cut = len(a.log())
    cut.apply(a_host)
    cut_at = time.monotonic()
    events: dict[str, tuple[float, Callable[[], object]]] = {
        "sockets": (NOTICE_WITHIN, lambda: not open_at_cut & a_host.connections(*cut.ports)),
        "reclaimed": (
            CUT_SECONDS + 60,
            lambda: set(held) <= set(rows_in_state(url, run_id, "finished")),
        ),
    }
    for line in cut.logged:
        events[line] = (NOTICE_WITHIN, partial(logged_since, a, log_at_cut, line))
    seen: dict[str, float] = {}
    # Once the sweeper has re-sent what a held (lease 6 s + a sweep), so the new run's zips
    # queue behind those: the run is work for a after the heal.
    watch(cut_at, events, seen, until=cut_at + 8)
    with ThreadPoolExecutor(1) as background:
        # Into a table of its own: a second run on the first's target is refused until the
        # first has finished (runguard.py).
        second_run = background.submit(
            start_run,
            lab.stack.env,
            "--all-zips",
            "--transform",
            SLOW,
            "--target-table",
            "clean_companies_second",
        )
        watch(cut_at, events, seen, until=cut_at + CUT_SECONDS)
        second = second_run.result()
    time.sleep(max(0.0, cut_at + CUT_SECONDS - time.monotonic()))  # the partition's length
    healed_db = scalar(url, "SELECT now()")
    assert isinstance(healed_db, datetime)
    cut.undo(a_host)
    healed = time.monotonic()
    wait_until(
        lambda: claimed_since(url, "a", healed_db), timeout=90, what="host a to take work again"
    )
    back = time.monotonic() - healed
    watch(cut_at, events, seen)  # the zips a held, if they were not finished during the cut

    assert producer.wait(120) == 0, producer.stderr()
    wait_for_run_end(url, second, timeout=120)
    for run in (run_id, second):
        rows = audit_rows(url, run)
        assert {r["state"] for r in rows.values()} == {"finished"}, rows
        assert sum(int(r["rows_written"]) for r in rows.values()) == 14 * 5  # type: ignore[call-overload]
    logged = {line: seen[line] for line in cut.logged}
    rows = audit_rows(url, run_id)
    after_cut = a.log()[log_at_cut:]
    return Measured(
        held, seen["sockets"], logged, seen["reclaimed"], healed - cut_at, back, rows, after_cut
    )


def story(m: Measured, lab: Lab) -> str:
    """What host a did and where the zips it held were finished, as measured."""
    said = "".join(f", logged '{line}' after {t:.1f} s" for line, t in m.logged.items())
    killed = m.log.count("Hard time limit")
    if killed:
        said += (
            f"; {killed} attempt(s) then hit the task time limit while still trying to "
            "record their retry"
        )
    done = [m.rows[k] for k in m.held]
    on_b = sum(str(r["worker"]).startswith("b@") for r in done)
    swept = sum(bool(r["requeues"]) for r in done)
    b_log = lab.worker("b").log().splitlines()
    idle = sum(
        any(f"[{r['task_id']}] succeeded" in line and "'skipped'" in line for line in b_log)
        for r in m.held.values()
    )
    return (
        f"host a's connections across the cut closed within {m.sockets_closed:.1f} s{said}. "
        f"Of the {len(done)} zip(s) it held, {on_b} finished on host b and "
        f"{len(done) - on_b} on host a ({swept} re-sent by the sweeper once their lease "
        f"expired; {idle} first message(s) later reached b and found the zip finished). "
        f"After the heal host a took work again in {m.back:.1f} s"
    )


def cut_and_record(lab: Lab, cut: Cut, fault: str, injected: str) -> None:
    """Run through `cut`, check exactness, record what was measured."""
    m = run_through_a_cut(lab, cut)
    exactly_once(
        lab.url,
        fault,
        f"{injected} for {m.lasted:.0f} s; host b connected",
        story(m, lab),
        recovery_seconds=m.reclaimed,
    )


def test_a_host_cut_off_from_redis_lets_go_of_its_sockets_and_nothing_is_lost(lab: Lab) -> None:
    port = lab.redis.port
    cut_and_record(
        lab,
        Cut((port,), lambda h: h.cut(port), Host.heal),
        "worker host cut off from Redis (half-open)",
        "iptables DROP both ways between host a and Redis (Postgres still reachable)",
    )


def test_a_host_cut_off_from_postgres_gives_up_its_zips_in_bounded_time(lab: Lab) -> None:
    port = lab.cluster.port
    cut_and_record(
        lab,
        Cut((port,), lambda h: h.cut(port), Host.heal, (DATABASE_LOST,)),
        "worker host cut off from Postgres (half-open)",
        "iptables DROP both ways between host a and Postgres (Redis still reachable)",
    )


@pytest.mark.parametrize("how", ["iptables", "link-down"])
def test_a_host_cut_off_from_both_gives_up_its_zips_in_bounded_time(lab: Lab, how: str) -> None:
    ports = (lab.redis.port, lab.cluster.port)
    if how == "iptables":
        cut = Cut(ports, Host.cut, Host.heal, (DATABASE_LOST,))
        injected = "iptables DROP of all traffic between host a and the servers"
    else:
        cut = Cut(ports, Host.link_down, Host.link_up, (DATABASE_LOST,))
        injected = "`ip link set down` on host a's veth at the bridge"
    cut_and_record(lab, cut, f"worker host cut off from Redis and Postgres ({how})", injected)
