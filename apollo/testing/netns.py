"""Hosts as hosts: each role in a network namespace of its own, racks of them on one switch, links that fail.

On one loopback every "host" shares one interface, so nothing can be cut off from one peer and not
another, and a dead rack is only a set of killed processes. Here each host is a network namespace
with a veth link into one bridge (the switch) in the root namespace, where the test and its clients
run. A rack is a group of hosts with its own /24 of the network's /16.

Faults are policy-routing rules inside a host's namespace, because this kernel has neither ``netem``
nor tc's drop actions: ``from PEER iif eth0 blackhole`` drops every packet that arrives from the
peer. The host's own packets to the peer still leave and the answers are dropped, so both sides see
silence, as across a dead link, and never a quick refusal that would make a fault easy to handle.
Bandwidth caps are ``tbf`` qdiscs on both ends of a host's link. Loss is a classic BPF filter on the
ingress of both ends that drops a random share of the frames, so TCP retransmits as across a lossy
wire (``loss``). Latency is a proxy of the harness's own (``apollo.testing.linkproxy``) in the host's
namespace, through which iptables redirects every TCP connection coming in on the host's link; it holds
every byte half the round trip each way (``delay``).

Everything needs root (``CAP_NET_ADMIN``); latency needs ``iptables`` too (``./run tests`` installs
it). Leftovers of a killed test process, namespaces and link proxies, are removed by the next network
that takes the same slot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

SLOTS = 50  # networks that may exist at once (one per test process): 10.100.0.0/16 ... 10.149.0.0/16
_STATE = Path("/run/apollo-netns")
_INTERFACE = "eth0"  # a host's end of its link, inside its namespace
# Rule preferences inside a host: partitions first, then a cut rack's own subnet, then the cut; the
# local table, which the kernel consults first by default, moves after them so they see local traffic.
_PREF_PARTITION, _PREF_RACK_INSIDE, _PREF_RACK_CUT, _PREF_LOCAL = 10, 15, 20, 100
# Where a host's link proxy listens: below the ephemeral range, so neither a role's port (free_port)
# nor a connection's own port can be it.
_PROXY_PORT = 1000
_PROXY_MODULE = "apollo.testing.linkproxy"
_PROXY_READY_S = 10.0
_GSO_SEGMENTS_MAX = 65535  # a veth's default: one packet of up to 64 KiB of TCP segments
# Classic BPF as tc's ``bytecode`` takes it: opcodes BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JGE|BPF_K and
# BPF_RET|BPF_K; the load offset that reads a random number (SKF_AD_OFF + SKF_AD_RANDOM); and what a
# direct-action filter returns to pass or drop a packet.
_LD_W_ABS, _JGE_K, _RET_K = 0x20, 0x35, 0x06
_SKF_AD_RANDOM = 2**32 - 0x1000 + 56
_TC_ACT_OK, _TC_ACT_SHOT = 0, 2


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


def _run(command: list[str]) -> None:
    """:raises NetnsUnavailable: the command failed, with what it said."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise NetnsUnavailable(f"{' '.join(command)}: {result.stderr.strip()}")


def _ip(*args: str, namespace: str | None = None) -> None:
    _run(["ip", *(["-n", namespace] if namespace else []), *args])


def delay_available() -> str | None:
    """None when latency can be put on links here, else why not (``delay`` needs ``iptables``)."""
    if shutil.which("iptables") is None:
        return "`iptables` is missing (apt-get install iptables): no latency on links"
    return None


def _iptables(host: Host, *args: str) -> None:
    _run(host.command(["iptables", "-w", *args]))


def _keep_conntrack(host: Host) -> None:
    """Connection tracking stays on in ``host`` for good once a delay has been put on its link.

    A namespace tracks connections only while a rule needs it. Without this rule, the end of a delay
    (its REDIRECT rule deleted) turns tracking off, the connections the proxy still relays lose their
    address translation, and their next packets reach the roles untranslated and are answered with
    resets. The rule matches established packets and does nothing with them."""
    keeper = ["INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED"]
    if not host.conntrack_kept:
        _iptables(host, "-A", *keeper)
        host.conntrack_kept = True


def _tc(*args: str, namespace: str | None = None) -> None:
    _run(["ip", "netns", "exec", namespace, "tc", *args] if namespace else ["tc", *args])


def _drop_program(percent: float) -> str:
    """tc's ``bytecode`` of a classic BPF filter that drops ``percent`` % of packets, each on its own draw:
    a random 32-bit number below that share of 2**32 returns TC_ACT_SHOT, any other TC_ACT_OK."""
    threshold = min(2**32 - 1, round(percent / 100 * 2**32))
    program = [
        (_LD_W_ABS, 0, 0, _SKF_AD_RANDOM),  # A = a random u32
        (_JGE_K, 1, 0, threshold),  # A >= threshold: skip the drop
        (_RET_K, 0, 0, _TC_ACT_SHOT),
        (_RET_K, 0, 0, _TC_ACT_OK),
    ]
    return f"{len(program)}," + ",".join(" ".join(map(str, op)) for op in program)


def _redirect_rule() -> list[str]:
    """Every TCP connection that arrives on a host's link goes to its link proxy: nat decides by a
    connection's first packet. Only SYNs: connection tracking starts with the first delay, and takes up
    connections that were open already from their next packet, which must not go to the proxy (a
    connection it never accepted, so it would answer with a reset)."""
    return ["PREROUTING", "-i", _INTERFACE, "-p", "tcp", "--syn", "-j", "REDIRECT", "--to-ports", str(_PROXY_PORT)]


@dataclass
class Host:
    """One host: a namespace, its address, and its link's end in the root namespace."""

    name: str
    rack: int
    namespace: str
    address: str
    link: str  # the root namespace's end of the veth pair, a port of the bridge
    rules: set[tuple[int, str]] = field(default_factory=set)  # (preference, selector) now in force
    loss_percent: float = 0.0
    capped: bool = False
    conntrack_kept: bool = False  # see _keep_conntrack
    proxy: subprocess.Popen | None = None  # the link proxy that new connections into the host go through

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
        self._proxies: list[subprocess.Popen] = []  # every link proxy started, draining ones too
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
        host.capped = True

    def loss(self, host: Host, percent: float) -> None:
        """Drop ``percent`` % of the frames crossing ``host``'s link, each way on its own draws (a request
        and its answer each risk ``percent``). ``loss(host, 0)`` takes it away.

        Frames are dropped where they come off the wire: at the ingress of the host's end of the link
        (arrivals) and of the switch's end (departures), so the sending TCP believes it sent them and
        recovers as from a lossy link. An iptables DROP on output is reported to the sending socket,
        which just sends again: 193 such drops made 30 retransmissions, where 216 drops of departures
        here made 206. The filter is classic BPF in tc's direct-action mode (``_drop_program``): this
        kernel has neither ``netem`` nor tc's drop actions. Both ends pass one frame per packet
        (``gso_max_segs 1``), else one draw would drop up to 64 KiB of offloaded segments at once (at
        5 %, one drop in 750 frames, measured).
        """
        ends = ((host.link, None), (_INTERFACE, host.namespace))
        if host.loss_percent and percent <= 0:
            for device, namespace in ends:
                _tc("qdisc", "del", "dev", device, "clsact", namespace=namespace)
        host.loss_percent = max(0.0, percent)
        for device, namespace in ends:
            segments = 1 if host.loss_percent else _GSO_SEGMENTS_MAX
            _ip("link", "set", device, "gso_max_segs", str(segments), namespace=namespace)
            if host.loss_percent:
                _tc("qdisc", "replace", "dev", device, "clsact", namespace=namespace)
                _tc("filter", "replace", "dev", device, "ingress", "pref", "1", "handle", "1", "bpf", "da",
                    "bytecode", _drop_program(host.loss_percent), namespace=namespace)  # fmt: skip

    def delay(self, host: Host, rtt_ms: float) -> None:
        """Add ``rtt_ms`` to the round trip of every TCP connection into ``host`` opened from now on.

        Half of it each way: the host's link proxy (``apollo.testing.linkproxy``), in its namespace, takes
        every TCP connection that arrives on the link (iptables REDIRECT) and holds its bytes. A connection
        the host opens to another host is delayed by the other's delay only, so one between two delayed
        hosts gets both. Connections opened before go on undelayed (NAT is decided by a connection's first
        packet): delay the hosts before the roles start to delay all of their connections. Partitions still
        act first, on the packets from a peer. ``delay(host, 0)`` takes the redirect away; the proxy
        relays the connections it has, undelayed, until they close.

        :raises NetnsUnavailable: no ``iptables``, or the proxy did not start.
        """
        if rtt_ms <= 0:
            if host.proxy is not None:
                self._undelay(host)
            return
        if host.proxy is not None and host.proxy.poll() is None:
            _tell(host.proxy, str(rtt_ms))
            return
        redirected = host.proxy is not None  # its proxy died: a new one takes over the redirect
        host.proxy = self._start_proxy(host, rtt_ms)
        if not redirected:
            _keep_conntrack(host)
            _iptables(host, "-t", "nat", "-A", *_redirect_rule())

    def _start_proxy(self, host: Host, rtt_ms: float) -> subprocess.Popen:
        """The link proxy in ``host``'s namespace, listening once this returns. Its stdin is its leash: the
        proxy ends when it closes, as it does when this process dies."""
        if why := delay_available():
            raise NetnsUnavailable(why)
        argv = [sys.executable, "-m", _PROXY_MODULE, "--port", str(_PROXY_PORT), "--rtt-ms", str(rtt_ms)]
        proxy = subprocess.Popen(host.command(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._proxies.append(proxy)
        readable, _, _ = select.select([proxy.stdout], [], [], _PROXY_READY_S)
        if not readable or proxy.stdout.readline() != b"ready\n":
            proxy.kill()
            raise NetnsUnavailable(f"the link proxy of {host.name} did not start (its errors are above)")
        return proxy

    def _undelay(self, host: Host) -> None:
        _iptables(host, "-t", "nat", "-D", *_redirect_rule())
        if host.proxy.poll() is None:
            _tell(host.proxy, "drain")
        host.proxy = None

    def restore_link(self, host: Host) -> None:
        """``host``'s link as ``add_host`` made it: no loss, no delay, no cap. Partitions stay (``heal``)."""
        self.loss(host, 0)
        self.delay(host, 0)
        if host.capped:
            _tc("qdisc", "del", "dev", host.link, "root")
            _tc("qdisc", "del", "dev", _INTERFACE, "root", namespace=host.namespace)
            host.capped = False

    def _stop_proxies(self) -> None:
        """End every link proxy: the end of its stdin first, a kill for one that lingers."""
        for proxy in self._proxies:
            with contextlib.suppress(OSError):
                proxy.stdin.close()
        for proxy in self._proxies:
            try:
                proxy.wait(2)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()
            proxy.stdout.close()
        self._proxies.clear()

    def destroy(self) -> None:
        self._stop_proxies()
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


def _tell(proxy: subprocess.Popen, line: str) -> None:
    """One control line to a link proxy (``apollo.testing.linkproxy``)."""
    proxy.stdin.write(line.encode() + b"\n")
    proxy.stdin.flush()


def _kill_proxies(namespace: str) -> None:
    """Kill the link proxies left in ``namespace`` by a process that died: deleting a namespace ends none
    of its processes. Only processes running the proxy's module are killed."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(OSError):
            if _PROXY_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(int(pid), signal.SIGKILL)


def _remove_slot(slot: int) -> None:
    """Every link, namespace and the bridge of ``slot``, and the link proxies left in its namespaces.

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
            _kill_proxies(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "link", "del", f"apb{slot}"], capture_output=True)
