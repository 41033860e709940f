"""Hosts as hosts: each role in a network namespace of its own, racks of them on one switch, links that fail.

On one loopback every "host" shares one interface, so nothing can be cut off from one peer and not
another, and a dead rack is only a set of killed processes. Here each host is a network namespace
with a veth link into one bridge (the switch) in the root namespace, where the test and its clients
run. A rack is a group of hosts with its own /24 of the network's /16.

Faults are policy-routing rules inside a host's namespace, because this kernel has neither ``netem``
nor tc's drop actions: ``from PEER iif eth0 blackhole`` drops every packet that arrives from the
peer. The host's own packets to the peer still leave and the answers are dropped, so both sides see
silence, as across a dead link, and never a quick refusal that would make a fault easy to handle.
Bandwidth caps are ``tbf`` qdiscs on both ends of a host's link.

Everything needs root (``CAP_NET_ADMIN``). Leftovers of a killed test process are removed by the
next network that takes the same slot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SLOTS = 50  # networks that may exist at once (one per test process): 10.100.0.0/16 ... 10.149.0.0/16
_STATE = Path("/run/apollo-netns")
_INTERFACE = "eth0"  # a host's end of its link, inside its namespace
# Rule preferences inside a host: partitions first, then a cut rack's own subnet, then the cut; the
# local table, which the kernel consults first by default, moves after them so they see local traffic.
_PREF_PARTITION, _PREF_RACK_INSIDE, _PREF_RACK_CUT, _PREF_LOCAL = 10, 15, 20, 100


class NetnsUnavailable(RuntimeError):
    """This process cannot create network namespaces (not root, or no ``ip``)."""


def available() -> str | None:
    """None when namespaces can be made here, else why not (for a test's skip message)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        subprocess.run(["ip", "netns", "list"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"`ip netns` does not work here: {exc}"
    return None


def _ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise NetnsUnavailable(f"{' '.join(command)}: {result.stderr.strip()}")


def _tc(*args: str, namespace: str | None = None) -> None:
    command = ["ip", "netns", "exec", namespace, "tc", *args] if namespace else ["tc", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise NetnsUnavailable(f"{' '.join(command)}: {result.stderr.strip()}")


@dataclass
class Host:
    """One host: a namespace, its address, and its link's end in the root namespace."""

    name: str
    rack: int
    namespace: str
    address: str
    link: str  # the root namespace's end of the veth pair, a port of the bridge
    rules: set[tuple[int, str]] = field(default_factory=set)  # (preference, selector) now in force

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host: its sockets bind and connect through the host's link only."""
        return ["ip", "netns", "exec", self.namespace, *argv]


class Network:
    """A bridge, hosts on it in racks, and the faults a test puts on their links.

    ``clients`` is the root namespace's own address on the bridge: what the test's clients connect
    from, so a partition from ``None`` cuts a host off from the clients and nothing else.
    """

    def __init__(self) -> None:
        if why := available():
            raise NetnsUnavailable(why)
        _STATE.mkdir(parents=True, exist_ok=True)
        with open(_STATE / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.slot = self._take_slot()
        self.bridge = f"apb{self.slot}"
        self.prefix = f"10.{100 + self.slot}"
        self.clients = f"{self.prefix}.255.254"
        self.hosts: dict[str, Host] = {}
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.clients}/16", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except Exception:
            self.destroy()
            raise

    def _take_slot(self) -> int:
        """The first slot no live process holds; a dead holder's leftovers are removed first."""
        for slot in range(SLOTS):
            owner = _STATE / str(slot)
            with contextlib.suppress(FileNotFoundError, ValueError):
                if _alive(int(owner.read_text())):
                    continue
            _remove_slot(slot)
            owner.write_text(str(os.getpid()))
            return slot
        raise NetnsUnavailable(f"all {SLOTS} network slots are held by live processes")

    def add_host(self, name: str, rack: int = 0) -> Host:
        """A new namespace linked to the switch, at the next address of ``rack``'s /24."""
        if name in self.hosts:
            raise ValueError(f"host {name} exists")
        index = len(self.hosts)
        in_rack = 1 + sum(1 for host in self.hosts.values() if host.rack == rack)
        host = Host(name, rack, f"apollo{self.slot}-{name}", f"{self.prefix}.{rack}.{in_rack}",
                    f"ap{self.slot}h{index}")  # fmt: skip
        self.hosts[name] = host
        _ip("netns", "add", host.namespace)
        _ip("link", "add", host.link, "type", "veth", "peer", "name", _INTERFACE, "netns", host.namespace)
        _ip("link", "set", host.link, "master", self.bridge)
        _ip("link", "set", host.link, "up")
        _ip("addr", "add", f"{host.address}/16", "dev", _INTERFACE, namespace=host.namespace)
        for device in (_INTERFACE, "lo"):
            _ip("link", "set", device, "up", namespace=host.namespace)
        _ip("rule", "add", "pref", str(_PREF_LOCAL), "lookup", "local", namespace=host.namespace)
        _ip("rule", "del", "pref", "0", namespace=host.namespace)
        return host

    def rack(self, rack: int) -> list[Host]:
        return [host for host in self.hosts.values() if host.rack == rack]

    def _add_rule(self, host: Host, pref: int, selector: str, *action: str) -> None:
        """``action``: ``blackhole`` unless given (``lookup local``: deliver, skipping the later rules)."""
        if (pref, selector) not in host.rules:
            _ip("rule", "add", "pref", str(pref), "from", selector, "iif", _INTERFACE, *(action or ["blackhole"]),
                namespace=host.namespace)  # fmt: skip
            host.rules.add((pref, selector))

    def _del_rule(self, host: Host, pref: int, selector: str) -> None:
        if (pref, selector) in host.rules:
            _ip("rule", "del", "pref", str(pref), "from", selector, "iif", _INTERFACE, namespace=host.namespace)
            host.rules.discard((pref, selector))

    def partition(self, host: Host, peer: Host | None = None) -> None:
        """Silence between ``host`` and ``peer`` (the clients when None), both ways; the rest is untouched."""
        self._add_rule(host, _PREF_PARTITION, f"{peer.address if peer else self.clients}/32")

    def heal(self, host: Host, peer: Host | None = None) -> None:
        self._del_rule(host, _PREF_PARTITION, f"{peer.address if peer else self.clients}/32")

    def cut_rack(self, rack: int) -> None:
        """Rack ``rack`` loses its uplink: its hosts still reach each other and nothing else reaches them."""
        for host in self.rack(rack):
            self._add_rule(host, _PREF_RACK_INSIDE, f"{self.prefix}.{rack}.0/24", "lookup", "local")
            self._add_rule(host, _PREF_RACK_CUT, f"{self.prefix}.0.0/16")

    def restore_rack(self, rack: int) -> None:
        for host in self.rack(rack):
            self._del_rule(host, _PREF_RACK_CUT, f"{self.prefix}.0.0/16")
            self._del_rule(host, _PREF_RACK_INSIDE, f"{self.prefix}.{rack}.0/24")

    def cap(self, host: Host, mbit: float) -> None:
        """At most ``mbit`` Mbit/s each way on ``host``'s link (a ``tbf`` on both of its ends).

        The bucket holds a fiftieth of a second's bytes: a tbf refills once a kernel tick, so a bucket
        smaller than a tick's worth (1/250 s here) caps the rate below what was asked (256 KiB gave
        64 MB/s at any rate above it)."""
        burst = max(64 * 1024, int(mbit * 1e6 / 8 / 50))
        shape = ["root", "tbf", "rate", f"{mbit}mbit", "burst", str(burst), "latency", "50ms"]
        _tc("qdisc", "replace", "dev", host.link, *shape)
        _tc("qdisc", "replace", "dev", _INTERFACE, *shape, namespace=host.namespace)

    def destroy(self) -> None:
        _remove_slot(self.slot)
        with contextlib.suppress(FileNotFoundError):
            (_STATE / str(self.slot)).unlink()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_slot(slot: int) -> None:
    """Every link, namespace and the bridge of ``slot``.

    The links go first and by name: a deleted namespace frees its end of a veth pair only when the
    kernel gets round to it, and a new network in the same slot would find the old names taken."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.split("\n")
    for line in links:
        name = line.split(": ")[1].split("@")[0] if ": " in line else ""
        if name.startswith(f"ap{slot}h"):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    for line in listed:
        name = line.split(" ")[0]
        if name.startswith(f"apollo{slot}-"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "link", "del", f"apb{slot}"], capture_output=True)
