"""A local etcd cluster (Debian's etcd-server, etcd 3.4) for the HA staging: N members on free
loopback ports, each with its own data dir, read through the v3 HTTP gateway (`/v3/kv/range`).

Members can be stopped and started again on purpose (quorum loss); a restarted member keeps its data
dir, so it rejoins the same cluster.
"""

from __future__ import annotations

import base64
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from firedrill.errors import StagingError
from firedrill.staging.common import chown_tree, free_ports
from firedrill.staging.rest import RestError, call
from firedrill.staging.service import Service, wait_for

ETCD_BINARY = "etcd"


def find_etcd() -> str:
    path = shutil.which(ETCD_BINARY) or ("/usr/bin/etcd" if Path("/usr/bin/etcd").is_file() else None)
    if path is None:
        raise StagingError("etcd not found (apt-get install etcd-server; scripts/setup.sh does it as root)")
    return path


@dataclass(eq=False)
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    datadir: Path
    service: Service

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def healthy(self, timeout_s: float = 0.5) -> bool:
        try:
            reply = call("GET", f"{self.client_url}/health", timeout_s=timeout_s)
        except RestError:
            return False
        return reply.ok and isinstance(reply.body, dict) and str(reply.body.get("health")) == "true"


class EtcdUnavailable(StagingError):
    """No etcd member answered a linearizable read (no quorum, or every member down)."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: str
    mod_revision: int
    lease: int


@dataclass(eq=False)
class EtcdCluster:
    workdir: Path
    user: str | None
    size: int = 3
    token: str = "firedrill"
    members: tuple[EtcdMember, ...] = ()

    def start(self, timeout_s: float = 30.0, *, wait: bool = True) -> None:
        """Start every member; with `wait`, until each answers /health (else `wait_healthy` later)."""
        binary = find_etcd()
        ports = free_ports(2 * self.size)
        members = []
        for i in range(self.size):
            name = f"etcd-{i + 1}"
            datadir = self.workdir / name
            members.append(
                EtcdMember(
                    name,
                    ports[2 * i],
                    ports[2 * i + 1],
                    datadir,
                    Service(name, [], self.workdir / "logs" / f"{name}.log", self.workdir, self.user),
                )
            )
        initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
        for m in members:
            m.service.args = [
                binary,
                "--name", m.name,
                "--data-dir", str(m.datadir),
                "--listen-client-urls", m.client_url,
                "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url,
                "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", self.token,
                "--log-level", "warn",
            ]  # fmt: skip
        self.members = tuple(members)
        if self.user:
            chown_tree(self.workdir / "logs", self.user)
        for m in self.members:
            m.service.start()
        if wait:
            self.wait_healthy(timeout_s)

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        wait_for("etcd cluster healthy", self.all_healthy, timeout_s=timeout_s)

    def all_healthy(self) -> bool:
        for m in self.members:
            if not m.service.alive():
                raise StagingError(f"{m.name} exited: {m.service.log_tail()}")
        return all(m.healthy() for m in self.members)

    def member(self, name: str) -> EtcdMember:
        for m in self.members:
            if m.name == name:
                return m
        raise StagingError(f"no etcd member named {name!r}")

    @property
    def hosts(self) -> str:
        """`host:port,...` of every member's client URL, as Patroni's etcd3 section takes them."""
        return ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)

    def stop_member(self, member: EtcdMember) -> None:
        """A clean stop (SIGTERM): the member is gone until `start_member`."""
        member.service.stop(timeout_s=5)

    def start_member(self, member: EtcdMember, timeout_s: float = 20.0) -> None:
        member.service.start()
        wait_for(f"{member.name} healthy again", member.healthy, timeout_s=timeout_s)

    def running(self) -> list[EtcdMember]:
        return [m for m in self.members if m.service.alive()]

    def get(self, key: str, *, timeout_s: float = 0.3) -> KeyValue | None:
        """A linearizable read of `key` from the first running member that answers; None if absent.
        Raises EtcdUnavailable when none does (no quorum: a linearizable read cannot succeed)."""
        encoded = base64.b64encode(key.encode()).decode()
        reasons = []
        for m in self.running():
            try:
                reply = call("POST", f"{m.client_url}/v3/kv/range", {"key": encoded}, timeout_s=timeout_s)
            except RestError as exc:
                reasons.append(str(exc))
                continue
            if not reply.ok or not isinstance(reply.body, dict):
                reasons.append(f"{m.name}: HTTP {reply.status}")
                continue
            kvs = reply.body.get("kvs") or []
            if not kvs:
                return None
            kv = kvs[0]
            return KeyValue(
                key=key,
                value=base64.b64decode(kv.get("value", "")).decode(errors="replace"),
                mod_revision=int(kv.get("mod_revision", 0)),
                lease=int(kv.get("lease", 0)),
            )
        raise EtcdUnavailable(
            f"no etcd member answered a read of {key}: {'; '.join(reasons) or 'none running'}"
        )

    def freeze_member(self, member: EtcdMember) -> None:
        member.service.signal(signal.SIGSTOP)

    def stop(self) -> None:
        """Kill every member (the data is a temp dir). Never raises."""
        for m in self.members:
            m.service.kill()
