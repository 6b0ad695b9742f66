"""RabbitMQ for tests: a virtual host of the test's own on the machine's RabbitMQ (created
with `rabbitmqctl`, deleted after with everything in it), and a private `rabbitmq-server`
node for the faults that restart the broker. The shared node is never stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from kombu import Connection

from etl_worker.devtools.embedded import free_port
from tests.support.services import wait_until

#: Run a test once on each broker: `@BOTH_BROKERS` on a test that takes the `stack` fixture
#: (tests/conftest.py), Redis then RabbitMQ.
BOTH_BROKERS = pytest.mark.parametrize("stack", ["redis", "amqp"], indirect=True)
BROKER_NAMES = {"redis": "Redis", "amqp": "RabbitMQ"}

#: The machine's RabbitMQ: where a test's vhost is made. Its URL without a vhost.
BASE_AMQP_URL = os.environ.get("ETL_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")


def rabbitmqctl(*args: str, node: str | None = None, timeout: float = 60) -> str:
    command = ["rabbitmqctl", *(["-n", node] if node else []), "-q", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed: {done.stderr or done.stdout}")
    return done.stdout


def available() -> bool:
    return shutil.which("rabbitmqctl") is not None and amqp_answers(BASE_AMQP_URL + "/")


def amqp_answers(url: str) -> bool:
    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception:
        return False
    return True


class Vhost:
    """A virtual host of one test, guest allowed everything in it; `delete()` removes it
    with its queues, exchanges and messages, and closes its connections."""

    def __init__(self, node: str | None = None, base_url: str = BASE_AMQP_URL) -> None:
        self.name = f"etltest-{uuid.uuid4().hex[:10]}"
        self.node = node
        rabbitmqctl("add_vhost", self.name, node=node)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*", node=node)
        self.url = f"{base_url}/{quote(self.name, safe='')}"

    def close_connections(self, why: str = "test closes this vhost's connections") -> None:
        """Close every client connection of this vhost alone (other vhosts keep theirs):
        to the clients, what a broker restart looks like."""
        rabbitmqctl("close_all_connections", "--vhost", self.name, why, node=self.node)

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name, node=self.node)


class RabbitNode:
    """A private rabbitmq-server node (its own name, ports, data and logs in a temporary
    directory), for tests that kill and restart the broker. `crash()` SIGKILLs it (only what
    is on disk survives: quorum queues and their messages are), `start()` starts it again
    on the same data, `stop()` removes it all."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="etl-test-rabbit-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "rabbitmq", "rabbitmq")
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"etltest{self.port}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        return os.environ | {
            # The Erlang cookie the node and rabbitmqctl share (Debian's package keeps it in
            # the rabbitmq user's home); the node only reads it.
            "HOME": "/var/lib/rabbitmq",
            "ERL_CRASH_DUMP": str(self.root / "erl_crash.dump"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            # No config file of the machine's node (its listener is 5672): ours is empty.
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
        }

    def start(self) -> None:
        for name, text in (
            ("enabled_plugins", "[].\n"),
            ("rabbitmq.conf", f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"),
        ):
            (self.root / name).write_text(text)
            if os.geteuid() == 0:
                shutil.chown(self.root / name, "rabbitmq", "rabbitmq")
        # Debian's /usr/sbin/rabbitmq-server would cd to the shared node's home: run the
        # server script itself, as the rabbitmq user (the node refuses to run as root).
        as_rabbitmq = ["runuser", "-u", "rabbitmq", "--"] if os.geteuid() == 0 else []
        self.process = subprocess.Popen(
            [*as_rabbitmq, "/usr/lib/rabbitmq/bin/rabbitmq-server"],
            env=self._env(),
            cwd=self.root,
            stdout=open(self.root / "server.out", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(
                lambda: amqp_answers(self.url) or self.process.poll() is not None,  # type: ignore[union-attr]
                timeout=90,
                interval=0.5,
                what=f"rabbitmq-server {self.name} on {self.port}",
            )
        except AssertionError:
            self.crash()  # a node that never answered must not outlive the test
            raise
        if self.process.poll() is not None:
            raise AssertionError(
                f"rabbitmq-server exited: {(self.root / 'server.out').read_text()[-2000:]}"
            )

    def crash(self) -> None:
        """SIGKILL the node's whole process group (beam and its helpers), as when the
        broker's machine dies."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.crash()
        self.start()

    def stop(self) -> None:
        self.crash()
        shutil.rmtree(self.root, ignore_errors=True)
