"""Network namespaces as separate machines, for the multi-machine test and benchmark.

:class:`Topology` makes one namespace for the coordinator and one per host, each host joined to
the coordinator's namespace by its own veth pair on a /30 of 10.231.0.0/16 (a private range,
used only inside namespaces this class made). Names carry a random suffix, so runs never meet,
and :meth:`Topology.close` kills every process left in them and deletes them (deleting a
namespace deletes its veth ends): nothing leaks into the machine's own network.

Needs root and iproute2 (``ip netns``); :func:`unavailable_reason` says why not when it can't.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence

#: 10.231.<subnet>.<4*i + 1 or 2>: the test range; never routed outside the namespaces.
PRIVATE_PREFIX = "10.231"
IP_TIMEOUT_S = 10.0


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (None when they can)."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs this as root)"
    probe = f"orcprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=IP_TIMEOUT_S)


@dataclasses.dataclass(frozen=True)
class Link:
    """One host's namespace and its veth pair to the coordinator's namespace."""

    host_ns: str
    host_dev: str
    coordinator_dev: str
    host_addr: str
    coordinator_addr: str  # the coordinator as this host reaches it


class Topology:
    """A coordinator namespace and ``hosts`` host namespaces, each wired to it point to point."""

    def __init__(self, hosts: int) -> None:
        self.tag = secrets.token_hex(3)  # veth names are at most 15 characters
        self.subnet = secrets.randbelow(250) + 1
        self.coordinator_ns = f"orc-c-{self.tag}"
        self.links: list[Link] = []
        self._made: list[str] = []
        try:
            self._add_ns(self.coordinator_ns)
            for i in range(hosts):
                self._add_link(i)
        except BaseException:
            self.close()
            raise

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _add_link(self, i: int) -> None:
        ns = f"orc-h{i}-{self.tag}"
        self._add_ns(ns)
        host_dev, coord_dev = f"oh{i}{self.tag}", f"oc{i}{self.tag}"
        base = 4 * i
        host_addr = f"{PRIVATE_PREFIX}.{self.subnet}.{base + 2}"
        coord_addr = f"{PRIVATE_PREFIX}.{self.subnet}.{base + 1}"
        # Made inside the host namespace, one end moved: no veth ever exists in the root one.
        _ip("-n", ns, "link", "add", host_dev, "type", "veth", "peer", "name", coord_dev)
        _ip("-n", ns, "link", "set", coord_dev, "netns", self.coordinator_ns)
        _ip("-n", ns, "addr", "add", f"{host_addr}/30", "dev", host_dev)
        _ip("-n", self.coordinator_ns, "addr", "add", f"{coord_addr}/30", "dev", coord_dev)
        _ip("-n", ns, "link", "set", host_dev, "up")
        _ip("-n", self.coordinator_ns, "link", "set", coord_dev, "up")
        self.links.append(Link(ns, host_dev, coord_dev, host_addr, coord_addr))

    def set_link(self, i: int, up: bool) -> None:
        """Cut or restore host ``i``'s cable (its coordinator-side veth end, so the host sees
        carrier loss and the coordinator loses its route: both ends go silent, neither dies)."""
        link = self.links[i]
        _ip("-n", self.coordinator_ns, "link", "set", link.coordinator_dev, "up" if up else "down")

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def popen(self, ns: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Run ``argv`` inside namespace ``ns`` (``ip netns exec`` execs it: same pid)."""
        return subprocess.Popen([*self.exec_prefix(ns), *argv], **kwargs)  # type: ignore[call-overload]

    def close(self) -> None:
        """Kill whatever still runs inside, then delete every namespace made (and its veths)."""
        for ns in reversed(self._made):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
