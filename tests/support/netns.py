"""Test "hosts" that can lose each other: each worker host is a network namespace joined by a
veth pair to a bridge in the root namespace, where the test's own Postgres and Redis listen
(on the bridge's address as well as 127.0.0.1). A host's link is cut the way networks
fail, silently: iptables DROP in the host's namespace (packets vanish both ways, no FIN, no
RST, every socket stays "established"), or its veth taken down.

Traffic stays inside what a test made: the namespaces have no route but their own /24, and
the servers listen on 127.0.0.1 and the bridge's address only. Each `Network` takes a /24
in 10.0.0.0/8 that no interface or route of the machine uses, under a lock, so parallel
runs never collide; its namespaces, veths and bridge carry the creating process's pid, and
`close()` removes them all (with whatever still runs inside). A `Network` left behind by a
killed test run is removed by the next one.

Needs root, iproute2 (`ip`) and iptables; `require_network_namespaces()` skips the test
without them, and fails it in CI (CI set), where they must be there.
"""

from __future__ import annotations

import fcntl
import ipaddress
import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Namespaces are `etlnet-<pid>-<n>-<host>`; links `etn<pid hex>-<n hex><b|index>` (Linux
#: caps interface names at 15 characters).
NAMESPACE_PREFIX = "etlnet-"
LINK_PREFIX = "etn"
_NAMESPACE = re.compile(rf"^{NAMESPACE_PREFIX}(\d+)-")
_LINK = re.compile(rf"^{LINK_PREFIX}([0-9a-f]+)-")
_LOCK = Path(tempfile.gettempdir()) / "etl-test-netns.lock"
_sequence = itertools.count()


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (apt-get install {package})"
    return None


def require_network_namespaces() -> None:
    """Skip the calling test when namespaces cannot be made; in CI, fail it instead."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"network fault tests cannot run in CI: {reason}")
    pytest.skip(reason)


def sh(*args: str, check: bool = True) -> str:
    """Run an ip/iptables command; its stdout. A failure says which command and why."""
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(namespace: str) -> None:
    """SIGKILL every process still running in `namespace` (all of them the tests' own)."""
    for pid in sh("ip", "netns", "pids", namespace, check=False).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _delete_namespace(namespace: str) -> None:
    _kill_inside(namespace)
    sh("ip", "netns", "delete", namespace, check=False)


def remove_leftovers() -> None:
    """Remove namespaces and links of test runs whose process is gone (killed mid-test)."""
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        match = _NAMESPACE.match(name)
        if match and not _alive(int(match.group(1))):
            _delete_namespace(name)
    for line in sh("ip", "-o", "link", "show", check=False).splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        match = _LINK.match(name)
        if match and not _alive(int(match.group(1), 16)):
            sh("ip", "link", "delete", name, check=False)


def _used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every IPv4 network the root namespace has an address or a route in."""
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in sh("ip", "-4", "-o", "addr", "show").splitlines():
        used.append(ipaddress.ip_interface(line.split()[3]).network)
    for line in sh("ip", "-4", "route", "show").splitlines():
        dest = line.split()[0]
        if dest != "default":
            used.append(ipaddress.ip_network(dest, strict=False))
    return used


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for _ in range(200):
        candidate = ipaddress.IPv4Network(
            f"10.{random.randint(64, 254)}.{random.randint(0, 255)}.0/24"
        )
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise RuntimeError("no free /24 in 10.64.0.0/10 for a test network")


@contextmanager
def _machine_lock() -> Iterator[None]:
    """Serialise choosing a subnet and claiming it, across processes."""
    with open(_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class Host:
    """A worker host: a network namespace with one veth link to the servers' bridge."""

    name: str
    namespace: str
    address: str
    #: The root-namespace end of its veth pair (a port of the bridge).
    veth: str
    server_address: str

    def command(self) -> list[str]:
        """Prefix that runs a command on this host: `ip netns exec NAMESPACE`."""
        return ["ip", "netns", "exec", self.namespace]

    def cut(self, *ports: int) -> None:
        """Drop every packet between this host and the servers' TCP `ports` (all traffic
        to the servers when none given), both ways, silently: a half-open partition."""
        for port in ports or (0,):  # 0: any port
            to_port = ["-p", "tcp", "--dport", str(port)] if port else []
            from_port = ["-p", "tcp", "--sport", str(port)] if port else []
            self._iptables("-A", "OUTPUT", "-d", self.server_address, *to_port, "-j", "DROP")
            self._iptables("-A", "INPUT", "-s", self.server_address, *from_port, "-j", "DROP")

    def connections(self, *ports: int) -> set[str]:
        """This host's established TCP connections to the servers' `ports`, by local
        address: what the kernel still counts as alive."""
        found = set()
        for port in ports:
            out = sh(*self.command(), "ss", "-Htn", "state", "established",
                     f"dst {self.server_address}:{port}")  # fmt: skip
            found |= {line.split()[2] for line in out.splitlines() if line.strip()}
        return found

    def heal(self) -> None:
        """Remove every DROP rule `cut` added."""
        self._iptables("-F", "OUTPUT")
        self._iptables("-F", "INPUT")

    def link_down(self) -> None:
        """Take the host's link down at the bridge (as a pulled cable or a dead switch port):
        the host's own end loses carrier, packets from either side are dropped."""
        sh("ip", "link", "set", self.veth, "down")

    def link_up(self) -> None:
        sh("ip", "link", "set", self.veth, "up")

    def _iptables(self, *args: str) -> None:
        sh(*self.command(), "iptables", "-w", *args)


class Network:
    """A bridge with the servers' address (`server_address`) and one namespace per host
    name. Use as a context manager, or call `close()`: everything is removed either way."""

    def __init__(self, host_names: Sequence[str]) -> None:
        remove_leftovers()
        pid, n = os.getpid(), next(_sequence) % 256
        link_tag = f"{LINK_PREFIX}{pid:x}-{n:x}"
        self.bridge = f"{link_tag}b"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        try:
            with _machine_lock():
                self.subnet = _free_subnet()
                addresses = list(self.subnet.hosts())
                self.server_address = str(addresses[0])
                sh("ip", "link", "add", self.bridge, "type", "bridge")
                sh("ip", "addr", "add", f"{self.server_address}/24", "dev", self.bridge)
            sh("ip", "link", "set", self.bridge, "up")
            for index, name in enumerate(host_names):
                self._add_host(name, f"{NAMESPACE_PREFIX}{pid}-{n}-{name}",
                               f"{link_tag}{index}", str(addresses[10 + index]))  # fmt: skip
        except BaseException:
            self.close()
            raise

    def _add_host(self, name: str, namespace: str, veth: str, address: str) -> None:
        sh("ip", "netns", "add", namespace)
        self._namespaces.append(namespace)
        sh("ip", "-n", namespace, "link", "set", "lo", "up")
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        sh("ip", "link", "set", veth, "master", self.bridge)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", namespace, "link", "set", "eth0", "up")
        self.hosts[name] = Host(name, namespace, address, veth, self.server_address)

    def host(self, name: str) -> Host:
        return self.hosts[name]

    def close(self) -> None:
        """Kill what still runs in the namespaces, delete them, their veths, the bridge."""
        for namespace in self._namespaces:
            _delete_namespace(namespace)  # its veth pair goes with it
        self._namespaces.clear()
        for host in self.hosts.values():
            sh("ip", "link", "delete", host.veth, check=False)
        sh("ip", "link", "delete", self.bridge, check=False)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
