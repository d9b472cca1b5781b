"""Availability zones on one machine: each zone a Linux network namespace with its own address, all of
them joined by veth pairs to a bridge that lives in a namespace of its own (the *fabric*).

Layout (iproute2, as root; nothing is ever created in, routed to or changed in the machine's own
network namespace, and no address outside the dedicated subnet is used):

    firedrill-<pid>-fabric   bridges fd<pid>br0 (the network) and fd<pid>br1 (a partition's island),
                             one veth end per zone: fd<pid>v<i>
    firedrill-<pid>-<zone>   the other end, fd<pid>z<i>, with the zone's address <subnet>.<10+i>/<len>,
                             and lo; servers placed in the zone run here (`launcher(zone)`)
    firedrill-<pid>-ctl      the control zone: firedrill's own out-of-band link for starting servers,
                             steady-state checks, promotion and read-back. No zone fault ever touches it.

Faults act on the fabric side only (`set_links`, `isolate`/`rejoin`), see `firedrill.faults.zones`.
Every zone knows every other zone's MAC address statically (as a cloud network answers ARP itself),
so a heal takes effect at once: a cut never leaves an ARP entry failed behind it, whose 1 s
retransmission timer would otherwise add up to a second to the outage the probes see.

Clients: the probes run inside the firedrill process, so their connections are made to originate in a
zone by moving the probe's own worker thread into the zone's namespace: `setns(fd, CLONE_NEWNET)` on
that thread only (Linux keeps the network namespace per thread; sockets are bound to the namespace of
the thread that creates them, for their whole life). `enter_thread(zone)` does that for good on a
dedicated worker thread; `entered(zone)` / `control()` do it for a block and then put the thread back.
Threads and processes started meanwhile inherit the namespace of the thread that starts them.

Names carry the owner pid, like the stagings' owner files, so `firedrill staging down` sweeps what a
killed run left (`sweep`): it stops the processes still inside such a namespace and deletes it.
Deleting the fabric namespace destroys the bridges and every veth pair with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from firedrill.errors import ConfigError, StagingError
from firedrill.staging.common import pid_alive, track, untrack

PREFIX = "firedrill"
CONTROL = "ctl"
FABRIC = "fabric"
# RFC 2544's benchmarking range: never routed on a real network, and only ever used inside the
# staging's own namespaces here.
DEFAULT_SUBNET = "198.18.0.0/24"
ZONE_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_OURS = re.compile(rf"^{PREFIX}-(\d+)-([a-z][a-z0-9]*)$")
_CLONE_NEWNET = 0x40000000
_IP_TIMEOUT_S = 10.0


def namespaces_unavailable() -> str | None:
    """Why zones cannot run here (one line), or None when they can: root and iproute2's `ip`."""
    if os.geteuid() != 0:
        return "zone scenarios need network namespaces: firedrill is not running as root"
    if shutil.which("ip") is None:
        return "zone scenarios need network namespaces: no `ip` binary (iproute2) on PATH"
    if not os.path.exists("/proc/thread-self/ns/net"):
        return "zone scenarios need network namespaces: this kernel has no /proc/thread-self/ns/net"
    return None


def _ip_binary() -> str:
    found = shutil.which("ip")
    if found is None:
        raise StagingError("iproute2's `ip` not found on PATH: zones need it")
    return found


def run_ip(args: Sequence[str], *, netns: str | None = None, batch: Sequence[str] = ()) -> str:
    """Run `ip [-n netns] args` (or `ip -n netns -batch -` fed `batch`); one StagingError line on failure."""
    cmd = [_ip_binary(), *(["-n", netns] if netns else []), *args]
    if batch:
        cmd += ["-batch", "-"]
    try:
        feed = "\n".join(batch) + "\n" if batch else None
        proc = subprocess.run(cmd, input=feed, capture_output=True, text=True, timeout=_IP_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        raise StagingError(f"ip {' '.join(args)}: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise StagingError(f"ip {' '.join(cmd[1:])} failed: {detail[-1] if detail else proc.returncode}")
    return proc.stdout


# ---- one thread into a namespace -----------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise StagingError(f"setns into {what} failed: {os.strerror(err)}")


def _open_namespace(name: str) -> int:
    try:
        return os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise StagingError(f"network namespace {name} is not there: {exc.strerror}") from exc


def enter_namespace(name: str) -> None:
    """Move the calling thread into namespace `name` for good (a dedicated worker thread)."""
    fd = _open_namespace(name)
    try:
        _setns(fd, name)
    finally:
        os.close(fd)


@contextlib.contextmanager
def in_namespace(name: str) -> Iterator[None]:
    """Run a block on this thread inside namespace `name`, then put the thread back where it was."""
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_namespace(name)
        try:
            yield
        finally:
            _setns(saved, "the thread's own network namespace")
    finally:
        os.close(saved)


# ---- the fabric ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ZoneLink:
    """The one veth pair that joins a zone to the fabric: cutting it cuts the zone off."""

    zone: str
    namespace: str  # the zone's namespace (holds `peer` and the address)
    veth: str  # the fabric-side end, in the fabric namespace: what a fault takes down or moves
    peer: str  # the zone-side end
    address: str  # the zone's address (on `peer`)

    def describe(self) -> str:
        return f"{self.namespace} {self.peer} {self.address} <-> fabric {self.veth}"


def validate_zone_names(zones: Sequence[str]) -> tuple[str, ...]:
    for zone in zones:
        if not ZONE_NAME.fullmatch(zone) or zone in (CONTROL, FABRIC):
            raise ConfigError(
                f"zone name {zone!r}: use 1-8 lower-case letters or digits, starting with a letter "
                f"(not '{CONTROL}' or '{FABRIC}')"
            )
    if len(set(zones)) != len(zones):
        raise ConfigError(f"zone names must be distinct: {', '.join(zones)}")
    return tuple(zones)


def zone_network(subnet: str, zones: int) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as exc:
        raise ConfigError(f"zones subnet {subnet!r} is not an IPv4 network: {exc}") from exc
    if net.is_loopback or net.is_multicast or net.is_link_local or not (net.is_private or net.is_reserved):
        raise ConfigError(f"zones subnet {subnet} must be a private or reserved range, not {net}")
    if net.num_addresses < 10 + zones + 2:
        raise ConfigError(f"zones subnet {subnet} is too small for {zones} zones (use a /24)")
    return net


class ZoneFabric:
    """`with ZoneFabric(["a", "b", "c", "client"]) as fabric:` creates the namespaces, the bridges and
    the links (plus the control zone); leaving the block deletes all of it, also on an exception."""

    def __init__(
        self, zones: Sequence[str], *, subnet: str = DEFAULT_SUBNET, owner: int | None = None
    ) -> None:
        self.owner = owner if owner is not None else os.getpid()
        self.zones = (*validate_zone_names(zones), CONTROL)
        self.network = zone_network(subnet, len(self.zones))
        self.fabric_namespace = f"{PREFIX}-{self.owner}-{FABRIC}"
        self.bridge = f"fd{self.owner}br0"
        self.island = f"fd{self.owner}br1"
        self._created: list[str] = []
        self._down: set[str] = set()
        self._isolated: set[str] = set()

    # ---- names and addresses ---------------------------------------------------------------------
    def namespace(self, zone: str) -> str:
        self._require(zone)
        return f"{PREFIX}-{self.owner}-{zone}"

    def address(self, zone: str) -> str:
        return str(self.network.network_address + 10 + 1 + self.zones.index(self._require(zone)))

    def link(self, zone: str) -> ZoneLink:
        i = self.zones.index(self._require(zone)) + 1
        return ZoneLink(
            zone, self.namespace(zone), f"fd{self.owner}v{i}", f"fd{self.owner}z{i}", self.address(zone)
        )

    def links(self) -> list[ZoneLink]:
        return [self.link(z) for z in self.zones]

    def launcher(self, zone: str) -> tuple[str, ...]:
        """The command prefix that starts a process inside the zone (`ip netns exec <namespace>`)."""
        return (_ip_binary(), "netns", "exec", self.namespace(zone))

    def zone_of(self, host: str) -> str | None:
        return next((z for z in self.zones if self.address(z) == host), None)

    def _require(self, zone: str) -> str:
        if zone not in self.zones:
            raise ConfigError(f"unknown zone {zone!r} (zones: {', '.join(self.zones)})")
        return zone

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> ZoneFabric:
        why = namespaces_unavailable()
        if why:
            raise StagingError(why)
        track(self)
        try:
            self._build()
        except BaseException:
            self.stop()
            raise
        return self

    def _build(self) -> None:
        for name in [self.fabric_namespace, *(self.namespace(z) for z in self.zones)]:
            run_ip(["netns", "add", name])
            self._created.append(name)
        fabric = [
            f"link add {self.bridge} type bridge",
            f"link set {self.bridge} up",
            f"link add {self.island} type bridge",
            f"link set {self.island} up",
        ]
        for link in self.links():
            fabric += [
                f"link add {link.veth} type veth peer name {link.peer} netns {link.namespace}",
                f"link set {link.veth} master {self.bridge} up",
            ]
        run_ip([], netns=self.fabric_namespace, batch=fabric)
        macs: dict[str, str] = {}
        for link in self.links():
            run_ip(
                [],
                netns=link.namespace,
                batch=[
                    f"addr add {link.address}/{self.network.prefixlen} dev {link.peer}",
                    f"link set {link.peer} up",
                    "link set lo up",
                ],
            )
            shown = run_ip(["-o", "link", "show", "dev", link.peer], netns=link.namespace)
            found = re.search(r"link/ether ([0-9a-f:]{17})", shown)
            if found is None:
                raise StagingError(f"no MAC address on {link.peer} in {link.namespace}")
            macs[link.address] = found.group(1)
        # Static neighbours, as a cloud network answers ARP itself: no ARP resolution that a cut leaves
        # failed and its 1 s retransmission timer would keep failed after the heal (so a heal takes
        # effect at once, and a measured outage is the cut's, not ARP's).
        for link in self.links():
            neigh = [
                f"neigh replace {addr} lladdr {mac} dev {link.peer} nud permanent"
                for addr, mac in macs.items()
                if addr != link.address
            ]
            run_ip([], netns=link.namespace, batch=neigh)

    def stop(self) -> None:
        """Stop any process still inside a zone, delete every namespace (the bridges and veth pairs go
        with the fabric's). Idempotent; never raises, so teardown always finishes."""
        for name in reversed(self._created):
            with contextlib.suppress(StagingError):
                kill_namespace_processes(name)
        for name in reversed(self._created):
            with contextlib.suppress(StagingError):
                run_ip(["netns", "del", name])
        self._created.clear()
        self._down.clear()
        self._isolated.clear()
        untrack(self)

    def __enter__(self) -> ZoneFabric:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- threads in zones ------------------------------------------------------------------------
    def entered(self, zone: str) -> contextlib.AbstractContextManager[None]:
        return in_namespace(self.namespace(zone))

    def control(self) -> contextlib.AbstractContextManager[None]:
        """A block on this thread in the control zone: it reaches every zone the faults left reachable."""
        return in_namespace(self.namespace(CONTROL))

    def enter_thread(self, zone: str) -> None:
        enter_namespace(self.namespace(zone))

    # ---- the links a fault acts on (fabric side only) -------------------------------------------
    def set_links(self, zones: Sequence[str], *, up: bool) -> None:
        """Take the zones' links down (a clean partition: packets to and from them vanish) or up, in one
        `ip -batch` call."""
        self._no_control(zones)
        state = "up" if up else "down"
        run_ip(
            [], netns=self.fabric_namespace, batch=[f"link set {self.link(z).veth} {state}" for z in zones]
        )
        (self._down.difference_update if up else self._down.update)(zones)

    def isolate(self, zones: Sequence[str]) -> None:
        """Move the zones' links onto the island bridge: they reach each other, and no other zone."""
        self._no_control(zones)
        cmds = [f"link set {self.link(z).veth} master {self.island}" for z in zones]
        run_ip([], netns=self.fabric_namespace, batch=cmds)
        self._isolated.update(zones)

    def rejoin(self, zones: Sequence[str]) -> None:
        cmds = [f"link set {self.link(z).veth} master {self.bridge}" for z in zones]
        run_ip([], netns=self.fabric_namespace, batch=cmds)
        self._isolated.difference_update(zones)

    def heal(self) -> list[str]:
        """Every link up and on the main bridge again; returns the zones that were cut or isolated."""
        touched = sorted(self._down | self._isolated)
        if self._isolated:
            self.rejoin(sorted(self._isolated))
        if self._down:
            self.set_links(sorted(self._down), up=True)
        return touched

    @property
    def impaired(self) -> frozenset[str]:
        return frozenset(self._down | self._isolated)

    def _no_control(self, zones: Sequence[str]) -> None:
        for zone in zones:
            if self._require(zone) == CONTROL:
                raise ConfigError("the control zone is never cut: it is firedrill's own out-of-band link")


def kill_namespace_processes(name: str, timeout_s: float = 5.0) -> list[int]:
    """SIGKILL every process inside one of firedrill's namespaces (only servers it started live there)."""
    if not _OURS.fullmatch(name):
        raise StagingError(f"refusing to touch processes in {name}: not a firedrill namespace")
    pids = [int(p) for p in run_ip(["netns", "pids", name]).split() if p.isdigit()]
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return pids


def leftover_namespaces() -> list[tuple[str, int]]:
    """(namespace, owner pid) of every firedrill namespace on this machine."""
    if shutil.which("ip") is None:
        return []
    found: list[tuple[str, int]] = []
    for line in run_ip(["netns", "list"]).splitlines():
        name = line.split(" ", 1)[0].strip()
        match = _OURS.fullmatch(name)
        if match:
            found.append((name, int(match.group(1))))
    return sorted(found)


def sweep(*, dry_run: bool = False, force: bool = False) -> list[str]:
    """What `firedrill staging down` does with namespaces a killed run left: one line each."""
    lines: list[str] = []
    for name, owner in leftover_namespaces():
        if pid_alive(owner) and owner != os.getpid() and not force:
            lines.append(f"keeping namespace {name}: in use by firedrill process {owner} (--force to remove)")
            continue
        if dry_run:
            lines.append(f"would remove namespace {name}")
            continue
        pids = kill_namespace_processes(name)
        run_ip(["netns", "del", name])
        lines.append(f"removed namespace {name}" + (f" and stopped pids {sorted(pids)}" if pids else ""))
    return lines
