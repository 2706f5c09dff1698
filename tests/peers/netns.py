"""A throwaway network namespace joined to the test's own namespace by a veth pair.

Why: baresip will not run with loopback alone (with only ``lo`` it binds nothing and never
answers), and the tests may talk only to loopback or to hosts in namespaces they create
themselves. So a peer that needs a "real" interface gets its own namespace.

The setup (tried on Linux 6.x as root; only loopback-range addresses, no private LAN range)::

    test's namespace                           voxflow-<pid>-<hex>
    ---------------------------------          ------------------------------
    vxf<hex>h  127.A.B.C/32  (host_addr)  <->  vxf<hex>n  127.A.B.C+1/32  (ns_addr)
    route ns_addr/32 dev vxf<hex>h              route host_addr/32 dev vxf<hex>n
          src host_addr                               src ns_addr
    route_localnet=1, IPv6 off on the veth     route_localnet=1, IPv6 off; lo up

* Every namespace treats all of 127.0.0.0/8 as its own (``local 127.0.0.0/8 dev lo``). A /32
  route beats that /8, so ``ns_addr`` (and only it) is sent through the veth instead.
* Linux drops packets to or from 127/8 on a non-loopback interface ("martian"), and ignores ARP
  for such addresses, unless ``net.ipv4.conf.<veth>.route_localnet=1``: set on both veth ends
  only, nothing else in the test's namespace changes.
* A socket bound to ``127.0.0.1`` can NOT reach ``ns_addr`` (the peer would answer its own
  127.0.0.1). Bind to ``host_addr`` (or to 0.0.0.0: the route's ``src`` then picks
  ``host_addr``). Inside the namespace, ``ns_addr`` and its own 127.0.0.1 work as usual.
* A and B are random (127.100-250.x.x) so parallel test runs never share addresses; addresses
  already present in the test's namespace are skipped.

Cleanup always runs, even when setup fails halfway: processes left in the namespace are killed
(everything in it was started by the test), the veth pair is deleted (that removes its
addresses and routes) and the namespace name is removed. :func:`remove_stale` also removes
namespaces left by test processes that died without cleaning up (their pid is in the name).

Without CAP_NET_ADMIN (not root, or a container without it) :func:`network_namespace` raises
:class:`NetnsUnavailable`; fixtures turn that into ``pytest.skip``.

Example fixture::

    @pytest.fixture
    def ns() -> Iterator[Netns]:
        try:
            with network_namespace() as ns:
                yield ns
        except NetnsUnavailable as exc:
            pytest.skip(str(exc))
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "voxflow"
_NAME = re.compile(rf"^{PREFIX}-(\d+)-([0-9a-f]{{6}})$")


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be created here (no ``ip``, or no CAP_NET_ADMIN)."""


@dataclass
class Netns:
    name: str
    host_if: str  # veth end in the test's own namespace
    ns_if: str  # veth end inside the namespace
    host_addr: str  # on host_if: the source address for reaching ns_addr
    ns_addr: str  # on ns_if: where the peers inside the namespace listen

    def exec_args(self, *argv: str) -> list[str]:
        """``argv`` prefixed to run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, *argv: str, timeout: float = 10, check: bool = False, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the namespace (output captured as text unless told otherwise)."""
        kwargs.setdefault("capture_output", True)
        return subprocess.run(
            self.exec_args(*argv), check=check, text=True, timeout=timeout, **kwargs
        )

    def popen(self, *argv: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the namespace, in its own process group (``ip netns exec`` execs,
        so the pid is the program's)."""
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(self.exec_args(*argv), **kwargs)

    def pids(self) -> list[int]:
        out = _ip("netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=10)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _sysctl(path: str, value: str, netns: str | None = None) -> None:
    if netns is None:
        Path("/proc/sys", path).write_text(value)
    else:
        key = path.replace("/", ".")
        subprocess.run(
            ["ip", "netns", "exec", netns, "sysctl", "-qw", f"{key}={value}"],
            check=True,
            capture_output=True,
            timeout=10,
        )


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    return None


def _used_addresses() -> set[str]:
    out = _ip("-4", "-o", "addr", "show").stdout + _ip("-4", "route", "show", "table", "all").stdout
    return set(re.findall(r"\b127\.\d+\.\d+\.\d+\b", out))


def _pick_addresses() -> tuple[str, str]:
    used = _used_addresses()
    while True:
        host = ipaddress.IPv4Address(
            f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{random.randrange(2, 250, 2)}"
        )
        pair = (str(host), str(host + 1))
        if not used.intersection(pair):
            return pair


def remove_stale() -> None:
    """Delete namespaces (and their veth) whose creating test process no longer exists."""
    out = _ip("netns", "list", check=False).stdout
    for line in out.splitlines():
        match = _NAME.match(line.split(" ", 1)[0])
        if not match:
            continue
        pid, tag = int(match.group(1)), match.group(2)
        try:
            os.kill(pid, 0)
            continue  # its creator is still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _ip("link", "del", f"vxf{tag}h", check=False)
        _ip("netns", "del", line.split(" ", 1)[0], check=False)


def _teardown(ns: Netns) -> None:
    for pid in ns.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while ns.pids() and time.monotonic() < deadline:
        time.sleep(0.02)
    _ip("link", "del", ns.host_if, check=False)
    _ip("netns", "del", ns.name, check=False)


def _setup(ns: Netns) -> None:
    _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if, "netns", ns.name)
    _ip("-n", ns.name, "link", "set", "lo", "up")
    # before the links go up: no IPv6 link-local address, no router solicitations in captures
    _sysctl(f"net/ipv6/conf/{ns.host_if}/disable_ipv6", "1")
    _sysctl(f"net/ipv4/conf/{ns.host_if}/route_localnet", "1")
    _sysctl(f"net/ipv6/conf/{ns.ns_if}/disable_ipv6", "1", ns.name)
    _sysctl(f"net/ipv4/conf/{ns.ns_if}/route_localnet", "1", ns.name)
    _ip("addr", "add", f"{ns.host_addr}/32", "dev", ns.host_if)
    _ip("-n", ns.name, "addr", "add", f"{ns.ns_addr}/32", "dev", ns.ns_if)
    _ip("link", "set", ns.host_if, "up")
    _ip("-n", ns.name, "link", "set", ns.ns_if, "up")
    _ip("route", "add", f"{ns.ns_addr}/32", "dev", ns.host_if, "src", ns.host_addr)
    _ip("-n", ns.name, "route", "add", f"{ns.host_addr}/32", "dev", ns.ns_if, "src", ns.ns_addr)
    deadline = time.monotonic() + 5
    while "LOWER_UP" not in _ip("-br", "link", "show", ns.host_if).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError(f"veth {ns.host_if} did not come up")
        time.sleep(0.01)


@contextlib.contextmanager
def network_namespace() -> Iterator[Netns]:
    """A new namespace ``voxflow-<pid>-<hex>`` reachable from here at ``ns_addr``."""
    reason = unavailable_reason()
    if reason:
        raise NetnsUnavailable(reason)
    remove_stale()
    tag = os.urandom(3).hex()
    name = f"{PREFIX}-{os.getpid()}-{tag}"
    created = _ip("netns", "add", name, check=False)
    if created.returncode != 0:
        raise NetnsUnavailable(f"ip netns add failed: {created.stderr.strip()}")
    host_addr, ns_addr = _pick_addresses()
    ns = Netns(name, f"vxf{tag}h", f"vxf{tag}n", host_addr, ns_addr)
    try:
        try:
            _setup(ns)
        except RuntimeError as exc:
            if re.search(r"not permitted|denied|not supported", str(exc), re.IGNORECASE):
                raise NetnsUnavailable(f"cannot set up a veth pair: {exc}") from exc
            raise
        yield ns
    finally:
        _teardown(ns)
