"""FailoverTarget over an existing Redis Sentinel deployment that firedrill did not start
(`kind = "sentinel"`): its Sentinels' addresses, the master name, password references.

Faults: `SENTINEL FAILOVER <name>` (no host access), and kill / freeze only through the commands the
profile names (`{node}` becomes the master's host:port). The canary finds the master through
Sentinel, as applications do. After each scenario the topology must settle to one master: a node
still reporting `role:master` beside the one the Sentinels name is a split brain, and a drill that
ends that way fails (the writes it took are counted as lost by the drill's read back).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from firedrill.config import Profile
from firedrill.config_ha import looks_like_production
from firedrill.config_sentinel import SentinelDeploymentSettings
from firedrill.errors import (
    ConfigError,
    DeadlineExceeded,
    GuardrailError,
    HarnessError,
    SteadyStateNotMet,
    TargetError,
)
from firedrill.evidence import Node
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.staging.service import wait_for
from firedrill.targets import redis_canary
from firedrill.targets.base import Change, FaultKind, FaultSpec, TargetDescription
from firedrill.targets.host_commands import host_command_faults, run_host_command
from firedrill.targets.lease import DrillLease
from firedrill.targets.lease_stores import RedisLeaseKey
from firedrill.targets.patroni_cluster import read_password
from firedrill.targets.redis_canary import RedisCanarySession, SentinelEndpoint

Address = tuple[str, int]


def _label(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


def _pairs(reply: Any) -> dict[str, str]:
    """SENTINEL MASTER / REPLICAS entries: a flat [k, v, k, v, ...] list (RESP2) or a dict."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = list(reply or [])
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}


class SentinelDeploymentTarget:
    def __init__(
        self,
        settings: SentinelDeploymentSettings,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        timeout_s: float = 1.0,
    ) -> None:
        self.s = settings
        self._password = password
        self._sentinel_password = sentinel_password
        self._timeout = timeout_s
        self._clients: dict[Address, redis.Redis] = {}
        self._failed: Address | None = None
        self._killed: Address | None = None
        self._frozen: Address | None = None

    # ---- clients (redis-py errors become TargetError here) ----------------------------------------
    def _client(self, addr: Address, *, sentinel: bool) -> redis.Redis:
        client = self._clients.get(addr)
        if client is None:
            client = redis.Redis(
                host=addr[0],
                port=addr[1],
                password=self._sentinel_password if sentinel else self._password,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
                protocol=2,
            )
            self._clients[addr] = client
        return client

    def _command(self, addr: Address, *args: str, sentinel: bool) -> Any:
        try:
            execute: Callable[..., Any] = self._client(addr, sentinel=sentinel).execute_command
            return execute(*args)
        except redis.RedisError as exc:
            text = str(exc).strip().splitlines()
            raise TargetError(
                f"{' '.join(args[:2])} on {_label(addr)} failed: {text[0] if text else type(exc).__name__}",
                code=type(exc).__name__,
            ) from exc

    def _sentinel(self, addr: Address, *args: str) -> Any:
        return self._command(addr, "SENTINEL", *args, sentinel=True)

    def _first_sentinel(self, *args: str) -> Any:
        reasons = []
        for addr in self.s.addresses():
            try:
                return self._sentinel(addr, *args)
            except TargetError as exc:
                reasons.append(str(exc))
        raise TargetError("no Sentinel answered: " + "; ".join(reasons))

    # ---- topology ------------------------------------------------------------------------------
    def master_votes(self) -> dict[str, Address | None]:
        votes: dict[str, Address | None] = {}
        for addr in self.s.addresses():
            try:
                reply = self._sentinel(addr, "GET-MASTER-ADDR-BY-NAME", self.s.master_name)
                votes[_label(addr)] = (str(reply[0]), int(reply[1])) if reply else None
            except (TargetError, ValueError, IndexError):
                votes[_label(addr)] = None
        return votes

    def current_master(self) -> Address:
        """The master a majority of all the Sentinels name."""
        votes = self.master_votes()
        named = [v for v in votes.values() if v is not None]
        for candidate in set(named):
            if named.count(candidate) > len(votes) // 2:
                return candidate
        shown = ", ".join(f"{s}={_label(v) if v else 'no answer'}" for s, v in votes.items())
        raise TargetError(f"Sentinels do not agree on a master for {self.s.master_name!r}: {shown}")

    def master_state(self) -> dict[str, str]:
        return _pairs(self._first_sentinel("MASTER", self.s.master_name))

    def replicas(self) -> list[dict[str, str]]:
        return [_pairs(r) for r in self._first_sentinel("REPLICAS", self.s.master_name) or []]

    def role(self, addr: Address) -> str:
        try:
            info = self._command(addr, "INFO", "replication", sentinel=False)
        except TargetError:
            return "unreachable"
        return str(info.get("role", "?")) if isinstance(info, dict) else "?"

    def _known_nodes(self) -> list[Address]:
        nodes = [self.current_master()]
        nodes += [(r["ip"], int(r["port"])) for r in self.replicas() if "ip" in r and "port" in r]
        return list(dict.fromkeys(nodes))

    def guard(self) -> list[str]:
        name = self.s.master_name
        if looks_like_production(name):
            raise GuardrailError(f"refusing Redis master '{name}': its name says production")
        if name not in self.s.allowed_masters:
            allowed = ", ".join(self.s.allowed_masters)
            raise GuardrailError(f"refusing Redis master '{name}': not in allowed_masters ({allowed})")
        state = self.master_state()  # the Sentinels watch it (else: ERR No such master)
        master = self.current_master()
        sentinels = int(state.get("num-other-sentinels", "0")) + 1
        return [
            f"Redis master '{name}' is in allowed_masters and its name does not say production",
            f"Sentinels name {_label(master)}; quorum {state.get('quorum', '?')}, "
            f"{state.get('num-slaves', '?')} replicas, {sentinels} Sentinels",
        ]

    # ---- description ---------------------------------------------------------------------------
    def describe(self) -> TargetDescription:
        master = self.current_master()
        state = self.master_state()
        nodes = [Node(name=_label(master), role="master", address=_label(master))]
        nodes += [
            Node(name=f"{r['ip']}:{r['port']}", role="replica", address=f"{r['ip']}:{r['port']}")
            for r in self.replicas()
        ]
        nodes += [Node(name=_label(a), role="sentinel", address=_label(a)) for a in self.s.addresses()]
        version = "unknown"
        with contextlib.suppress(TargetError):
            info = self._command(master, "INFO", "server", sentinel=False)
            version = str(info.get("redis_version", "unknown")) if isinstance(info, dict) else "unknown"
        return TargetDescription(
            kind="redis",
            environment_kind="sentinel",
            servers={"redis": version},
            nodes=tuple(nodes),
            settings={
                "master_name": self.s.master_name,
                "sentinel_quorum": f"{state.get('quorum', '?')} of {len(self.s.sentinels)}",
                "down_after_milliseconds": state.get("down-after-milliseconds", "?"),
                "failover_timeout_ms": state.get("failover-timeout", "?"),
                "parallel_syncs": state.get("parallel-syncs", "?"),
                "password": self.s.password.reference() if self.s.password else "none",
                "sentinel_password": self.s.sentinel_password.reference()
                if self.s.sentinel_password
                else "none",
                "canary_client": redis_canary.CLIENT_BEHAVIOUR,
            },
        )

    def drill_lease(self) -> DrillLease:
        """A key with a PX TTL on whichever node is master when it is taken or renewed."""
        name = self.s.master_name
        return RedisLeaseKey(
            lambda: self._client(self.current_master(), sentinel=False),
            f"firedrill:lease:{name}",
            f"Redis master '{name}'",
            ttl_s=self.s.lease_ttl_s,
        )

    def supported_faults(self) -> frozenset[FaultKind]:
        return frozenset({FaultKind.SWITCHOVER} | host_command_faults(self.s))

    def promotion_is_manual(self) -> bool:
        return False

    # ---- drill steps ---------------------------------------------------------------------------
    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        found: list[dict[str, str]] = []

        def steady() -> bool:
            found[:] = [self._steady_once(max_lag_s)]
            return True

        try:
            wait_for("Redis Sentinel steady", steady, timeout_s=timeout_s, interval_s=0.2)
        except HarnessError as exc:
            raise SteadyStateNotMet(str(exc)) from exc
        return found[0]

    def _steady_once(self, max_lag_s: float) -> dict[str, str]:
        votes = self.master_votes()
        if len({v for v in votes.values()}) != 1 or None in votes.values():
            raise TargetError(f"Sentinels do not all name one master: {votes}")
        master = self.current_master()
        if self.role(master) != "master":
            raise TargetError(f"{_label(master)} does not report role master")
        if "failover_in_progress" in self.master_state().get("flags", ""):
            raise TargetError("a failover is in progress")
        reps = self.replicas()
        bad = [
            f"{r.get('ip')}:{r.get('port')} ({r.get('flags')}, link {r.get('master-link-status')})"
            for r in reps
            if any(f in r.get("flags", "") for f in ("s_down", "o_down", "disconnected"))
            or r.get("master-link-status") != "ok"
        ]
        if not reps or bad:
            raise TargetError("replicas not healthy: " + (", ".join(bad) or "none known"))
        others = [a for a in self._known_nodes() if a != master and self.role(a) == "master"]
        if others:
            raise TargetError(f"split brain: {', '.join(map(_label, others))} also report role master")
        acked = int(
            self._command(master, "WAIT", str(len(reps)), str(max(1, int(max_lag_s * 1000))), sentinel=False)
        )
        if acked < len(reps):
            raise TargetError(
                f"only {acked} of {len(reps)} replicas acknowledged a write within {max_lag_s:g} s"
            )
        return {
            "master": _label(master),
            "replicas": ", ".join(f"{r['ip']}:{r['port']} link={r.get('master-link-status')}" for r in reps),
            "sentinels_agreeing": str(len(votes)),
            "replica_acks": f"{acked}/{len(reps)} within {max_lag_s:g} s (WAIT)",
        }

    def endpoint(self) -> SentinelEndpoint:
        return SentinelEndpoint(
            sentinels=self.s.addresses(),
            service_name=self.s.master_name,
            password=self._password,
            sentinel_password=self._sentinel_password,
        )

    def prepare_canary(self, run_id: str) -> None:
        redis_canary.drop_canary(self._client(self.current_master(), sentinel=False), run_id)

    def session_factory(self, run_id: str, probe: ProbeConfig) -> SessionFactory:
        endpoint = self.endpoint()
        return lambda: RedisCanarySession(endpoint, run_id, probe)

    def _run(self, command: tuple[str, ...], addr: Address, what: str) -> str:
        return run_host_command(command, _label(addr), what, timeout_s=self.s.command_timeout_s)

    def inject(self, fault: FaultSpec) -> str:
        master = self.current_master()
        self._failed = master
        if fault.kind is FaultKind.SWITCHOVER:
            reply = self._first_sentinel("FAILOVER", self.s.master_name)
            return f"SENTINEL FAILOVER {self.s.master_name}: {reply}; replacing {_label(master)}"
        if fault.kind is FaultKind.KILL:
            self._killed = master
            return f"ran {self._run(self.s.kill_command, master, 'kill')}"
        if fault.kind is FaultKind.FREEZE:
            self._frozen = master
            return f"ran {self._run(self.s.freeze_command, master, 'freeze')} for {fault.duration_s:g} s"
        raise ConfigError(f"fault '{fault.kind}' is not supported on an existing Sentinel deployment")

    def clear(self, fault: FaultSpec) -> str:
        if fault.kind is FaultKind.FREEZE and self._frozen is not None:
            addr, self._frozen = self._frozen, None
            return f"ran {self._run(self.s.thaw_command, addr, 'thaw')}"
        return "nothing to clear"

    def promote(self, *, timeout_s: float) -> str:
        failed = self._failed
        found: list[Address] = []

        def promoted() -> bool:
            master = self.current_master()
            found[:] = [master]
            return master != failed and self.role(master) == "master"

        began = time.monotonic()
        try:
            wait_for("Sentinel promotes a replica", promoted, timeout_s=timeout_s, interval_s=0.05)
        except HarnessError as exc:
            raise DeadlineExceeded(str(exc)) from exc
        return f"Sentinels agree on {_label(found[0])} after {time.monotonic() - began:.2f} s"

    def recovered_nodes(self, fault: FaultSpec) -> frozenset[str] | None:
        failed = self._failed
        return frozenset(_label(a) for a in self._known_nodes() if a != failed)

    def read_back(self, run_id: str) -> frozenset[int]:
        return redis_canary.read_back(self._client(self.current_master(), sentinel=False), run_id)

    def restore_topology(self, *, timeout_s: float) -> str:
        done: list[str] = []
        if self._frozen is not None:
            done.append(f"ran {self._run(self.s.thaw_command, self._frozen, 'thaw')}")
            self._frozen = None
        if self._killed is not None:
            done.append(f"ran {self._run(self.s.start_command, self._killed, 'start')}")
            self._killed = None
        old, self._failed = self._failed, None

        def settled() -> bool:
            reps = {(r["ip"], int(r["port"])): r for r in self.replicas() if "ip" in r}
            if old is not None and (old not in reps or reps[old].get("master-link-status") != "ok"):
                raise TargetError(f"{_label(old)} is not a linked replica yet")
            self._steady_once(1.0)
            return True

        try:
            wait_for(
                "one master, the old one a linked replica", settled, timeout_s=timeout_s, interval_s=0.25
            )
        except HarnessError as exc:
            raise TargetError(f"topology not restored: {exc}") from exc
        master = self.current_master()
        done.append(f"{_label(master)} master" + (f", {_label(old)} a linked replica" if old else ""))
        return "; ".join(done)

    def close(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()

    def plan(self, *, rate_hz: float) -> list[Change]:
        s = self.s
        changes = [
            Change(
                "data",
                f"SET firedrill:lease:{s.master_name} NX PX",
                s.master_name,
                "the drill lease, renewed",
            ),
            Change("data", "DEL + ZADD firedrill:canary:<run id>", s.master_name, f"{rate_hz:g} per second"),
            Change(
                "rest", f"SENTINEL FAILOVER {s.master_name}", ", ".join(s.sentinels), "switchover scenario"
            ),
        ]
        for what, cmd in (("kill", s.kill_command), ("start", s.start_command)):
            if cmd:
                changes.append(Change("command", what, " ".join(cmd), "{node} = the master's host:port"))
        return changes


def _settings(profile: Profile) -> SentinelDeploymentSettings:
    if profile.sentinel is None:
        raise ConfigError(f"profile '{profile.name}' has no [sentinel] section")
    return profile.sentinel


@contextmanager
def open_sentinel_deployment(profile: Profile) -> Iterator[SentinelDeploymentTarget]:
    s = _settings(profile)
    target = SentinelDeploymentTarget(
        s, password=read_password(s.password), sentinel_password=read_password(s.sentinel_password)
    )
    try:
        target.guard()
        yield target
    finally:
        target.close()


def plan_sentinel(profile: Profile) -> tuple[list[str], list[Change]]:
    s = _settings(profile)
    target = SentinelDeploymentTarget(
        s, password=read_password(s.password), sentinel_password=read_password(s.sentinel_password)
    )
    try:
        checks = target.guard()
        faults = ", ".join(sorted(f.value for f in target.supported_faults()))
        return [*checks, f"faults possible here: {faults}"], target.plan(rate_hz=profile.probe.rate_hz)
    finally:
        target.close()
