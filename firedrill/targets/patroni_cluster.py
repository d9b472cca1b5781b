"""FailoverTarget over an existing Patroni cluster that firedrill did not start (`kind = "patroni"`).

What firedrill may do there is what the profile names: Patroni's REST API (switchover), its own
fault proxy in front of the profile's DSN (network cut), and, only when the profile lists them, host
commands as argument lists (kill / start, freeze / thaw; `{node}` becomes the member's name). Before
anything else the guardrails run: the cluster's scope must be in `allowed_scopes`, and no scope or
member tag may say production. The password comes from an environment variable or a file and never
appears in logs or evidence, only its reference.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg.conninfo import conninfo_to_dict

from firedrill.config import Profile
from firedrill.config_ha import NODE_PLACEHOLDER, PasswordRef, PatroniClusterSettings, looks_like_production
from firedrill.errors import ConfigError, DeadlineExceeded, GuardrailError, HarnessError, TargetError
from firedrill.evidence import Node
from firedrill.faults.proxy import CutMode, FaultProxy
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.staging.patroni_api import ClusterView, Member, PatroniApi, failover_settings
from firedrill.staging.rest import RestError
from firedrill.staging.service import wait_for
from firedrill.targets import pg_canary
from firedrill.targets.base import Change, FaultKind, FaultSpec, TargetDescription
from firedrill.targets.ha_watch import HaWatcher
from firedrill.targets.host_commands import host_command_faults, run_host_command
from firedrill.targets.lease import DrillLease
from firedrill.targets.lease_stores import PgLockRow
from firedrill.targets.pg_canary import PgCanarySession, PgEndpoint
from firedrill.timeline import Timeline


def read_password(ref: PasswordRef | None) -> str | None:
    """The password a reference points at; a missing one is named by its reference, never shown."""
    if ref is None:
        return None
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            raise ConfigError(f"the database password variable {ref.env} is not set")
        return value
    assert ref.file is not None
    try:
        lines = ref.file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the database password file {ref.file}: {exc.strerror}") from exc
    if not lines or not lines[0]:
        raise ConfigError(f"the database password file {ref.file} is empty")
    return lines[0]


def endpoint_from_dsn(dsn: str, password: str | None) -> PgEndpoint:
    params = conninfo_to_dict(dsn)
    hosts = str(params.get("host") or "127.0.0.1").split(",")
    ports = str(params.get("port") or "5432").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    if len(ports) != len(hosts):
        raise ConfigError(f"the dsn lists {len(hosts)} hosts but {len(ports)} ports")
    return PgEndpoint(
        hosts=tuple((h, int(p)) for h, p in zip(hosts, ports, strict=True)),
        dbname=str(params.get("dbname") or "postgres"),
        user=str(params.get("user") or "postgres"),
        password=password,
        sslmode=str(params.get("sslmode") or "prefer"),
    )


def _base_url(member: Member) -> str:
    return member.api_url.removesuffix("/patroni").rstrip("/")


def _ip_address(host: str, port: int) -> str:
    """As the canary records its server (inet_server_addr():port), so samples match members."""
    try:
        return f"{socket.gethostbyname(host)}:{port}"
    except OSError:
        return f"{host}:{port}"


class PatroniClusterTarget:
    def __init__(self, settings: PatroniClusterSettings, *, password: str | None = None) -> None:
        self.s = settings
        self._apis = [PatroniApi(u, u, settings.rest_timeout_s) for u in settings.rest_urls]
        self._endpoint = endpoint_from_dsn(settings.dsn, password)
        self._proxy: FaultProxy | None = None
        self._watcher: HaWatcher | None = None
        self._old_primary: str | None = None
        self._killed: str | None = None
        self._frozen: str | None = None
        self.scope: str | None = None
        self._members = 0  # members seen by the guardrails: steady state wants them all back

    # ---- the cluster, read-only ------------------------------------------------------------------
    def cluster(self) -> ClusterView:
        reasons = []
        for api in self._apis:
            try:
                return api.cluster()
            except RestError as exc:
                reasons.append(str(exc))
        raise TargetError("no Patroni REST API answered /cluster: " + "; ".join(reasons))

    def _scope(self, view: ClusterView) -> str:
        if view.scope:
            return view.scope
        for api in self._apis:
            with contextlib.suppress(RestError):
                status = api.status()
                if status.scope:
                    return status.scope
        raise TargetError("the Patroni cluster did not say its scope")

    def guard(self) -> list[str]:
        """The guardrails, before any change: returns what was checked (for the plan and evidence)."""
        view = self.cluster()
        scope = self._scope(view)
        if looks_like_production(scope):
            raise GuardrailError(f"refusing Patroni cluster '{scope}': its scope says production")
        if scope not in self.s.allowed_scopes:
            allowed = ", ".join(self.s.allowed_scopes)
            raise GuardrailError(f"refusing Patroni cluster '{scope}': not in allowed_scopes ({allowed})")
        for m in view.members:
            for key, value in m.tags.items():
                if looks_like_production(key) or looks_like_production(value):
                    raise GuardrailError(
                        f"refusing Patroni cluster '{scope}': member {m.name} is tagged {key}={value}"
                    )
        self.scope = scope
        self._members = len(view.members)
        return [
            f"Patroni scope '{scope}' is in allowed_scopes; no scope or member tag says production",
            f"{len(view.members)} members: "
            + ", ".join(f"{m.name} ({m.role}, {m.state})" for m in view.members),
        ]

    def _leader(self) -> Member:
        view = self.cluster()
        if view.leader is None or view.leader.state != "running":
            raise TargetError("the Patroni cluster has no running leader")
        return view.leader

    def _member_api(self, member: Member) -> PatroniApi:
        return PatroniApi(_base_url(member), member.name, self.s.rest_timeout_s)

    # ---- description ---------------------------------------------------------------------------
    def describe(self) -> TargetDescription:
        view = self.cluster()
        leader = view.leader
        version = "unknown"
        config: dict[str, object] = {}
        if leader is not None:
            api = self._member_api(leader)
            with contextlib.suppress(RestError):
                version = api.status().version or "unknown"
            with contextlib.suppress(RestError):
                config = api.config()
        settings = failover_settings(config) | {
            "scope": self.scope or self._scope(view),
            "rest_urls": ", ".join(self.s.rest_urls),
            "client_endpoint": self._endpoint.conninfo(),  # the dsn's parts: no password in it
            "password": self.s.password.reference() if self.s.password else "none",
            "host_commands": ", ".join(
                name
                for name, cmd in (("kill", self.s.kill_command), ("freeze", self.s.freeze_command))
                if cmd
            )
            or "none",
        }
        return TargetDescription(
            kind="postgres",
            environment_kind="patroni",
            servers={"patroni": version},
            nodes=tuple(
                Node(name=m.name, role="primary" if m.is_leader else "replica", address=f"{m.host}:{m.port}")
                for m in view.members
            ),
            settings=settings,
        )

    def drill_lease(self) -> DrillLease:
        """A lock row in the cluster's own database, on the primary behind the DSN."""
        scope = self.scope or "?"
        return PgLockRow(
            self._endpoint.connect, f"patroni:{scope}", f"Patroni cluster '{scope}'", ttl_s=self.s.lease_ttl_s
        )

    def supported_faults(self) -> frozenset[FaultKind]:
        return frozenset({FaultKind.SWITCHOVER, FaultKind.NETWORK_CUT} | host_command_faults(self.s))

    def promotion_is_manual(self) -> bool:
        return False

    # ---- clients --------------------------------------------------------------------------------
    def probe_endpoint(self) -> PgEndpoint:
        if self._proxy is None:
            return self._endpoint
        e = self._endpoint
        return PgEndpoint(
            hosts=(("127.0.0.1", self._proxy.port),),
            dbname=e.dbname,
            user=e.user,
            password=e.password,
            sslmode=e.sslmode,
        )

    def prepare_fault(self, fault: FaultSpec) -> str:
        if fault.kind is not FaultKind.NETWORK_CUT:
            return "nothing to prepare"
        if self._proxy is None:
            self._proxy = FaultProxy(self._endpoint.hosts[0], name="app-patroni").start()
        return f"probes reach {self._endpoint.hosts[0][0]} through the fault proxy {self._proxy.address}"

    # ---- the HA manager's view -----------------------------------------------------------------
    def start_watch(self, timeline: Timeline) -> None:
        self.stop_watch()
        view = self.cluster()

        def leader() -> str | None:
            current = self.cluster().leader
            return current.name if current is not None else None

        apis = [PatroniApi(_base_url(m), m.name, 0.3) for m in view.members]
        self._watcher = HaWatcher(timeline, apis, leader).start()

    def stop_watch(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def wait_rejoined(self, *, timeout_s: float) -> str:
        name = self._old_primary
        if name is None:
            raise TargetError("no fault was injected, so no old primary to rejoin")
        if self._killed == name:
            self._run(self.s.start_command, name, "start")
            self._killed = None

        def rejoined() -> bool:
            member = next((m for m in self.cluster().members if m.name == name), None)
            return member is not None and not member.is_leader and member.state == "streaming"

        try:
            wait_for(f"{name} streaming as a replica", rejoined, timeout_s=timeout_s, interval_s=0.2)
        except HarnessError as exc:
            raise DeadlineExceeded(str(exc)) from exc
        return f"{name} streams from {self._leader().name} as a replica"

    # ---- drill steps ---------------------------------------------------------------------------
    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        seen: list[ClusterView] = []

        def healthy() -> bool:
            view = self.cluster()
            seen[:] = [view]
            if view.leader is None or view.leader.state != "running":
                raise TargetError("no running leader")
            if len(view.members) < self._members:
                raise TargetError(f"{len(view.members)} of {self._members} members registered")
            lagging = [
                m.name for m in view.replicas() if m.state != "streaming" or (m.lag or 0) > 16 * 1024 * 1024
            ]
            if lagging:
                raise TargetError(f"replicas not streaming (or over 16 MB behind): {', '.join(lagging)}")
            return True

        try:
            wait_for("Patroni cluster steady", healthy, timeout_s=timeout_s, interval_s=0.2)
        except HarnessError as exc:
            raise DeadlineExceeded(str(exc)) from exc
        view = seen[0]
        assert view.leader is not None
        return {
            "leader": view.leader.name,
            "timeline": str(view.leader.timeline),
            "replicas_streaming": ", ".join(f"{m.name} (lag {m.lag or 0} B)" for m in view.replicas()),
            "max_lag_s": f"{max_lag_s:g}",
        }

    def prepare_canary(self, run_id: str) -> None:
        with self._endpoint.connect() as conn:
            pg_canary.prepare_canary(conn)

    def session_factory(self, run_id: str, probe: ProbeConfig) -> SessionFactory:
        endpoint = self.probe_endpoint()
        return lambda: PgCanarySession(endpoint, run_id, probe)

    def _run(self, command: tuple[str, ...], node: str, what: str) -> str:
        return run_host_command(command, node, what, timeout_s=self.s.command_timeout_s)

    def inject(self, fault: FaultSpec) -> str:
        leader = self._leader()
        self._old_primary = leader.name
        if fault.kind is FaultKind.KILL:
            done = self._run(self.s.kill_command, leader.name, "kill")
            self._killed = leader.name
            return f"ran {done}"
        if fault.kind is FaultKind.FREEZE:
            done = self._run(self.s.freeze_command, leader.name, "freeze")
            self._frozen = leader.name
            return f"ran {done} for {fault.duration_s:g} s"
        if fault.kind is FaultKind.SWITCHOVER:
            return self._switchover(leader)
        if fault.kind is FaultKind.NETWORK_CUT:
            if self._proxy is None:
                raise ConfigError("a network cut needs prepare_fault() before the probes start")
            self._proxy.cut(fault.duration_s, CutMode.BLACKHOLE)
            host = self._endpoint.hosts[0][0]
            return f"network between the probes and {host} blackholed for {fault.duration_s:g} s"
        raise ConfigError(f"fault '{fault.kind}' is not supported on an existing Patroni cluster")

    def _switchover(self, leader: Member) -> str:
        candidate = self.cluster().switchover_candidate()
        if candidate is None:
            raise TargetError("no streaming replica to switch over to")
        api = self._member_api(leader)
        reply = api.switchover(leader.name, candidate.name, timeout_s=60)
        if not reply.ok:
            raise TargetError(f"Patroni refused the switchover: HTTP {reply.status} {reply.text()[:200]}")
        return (
            f"POST {api.url}/switchover leader={leader.name} candidate={candidate.name}: {reply.text()[:120]}"
        )

    def clear(self, fault: FaultSpec) -> str:
        if fault.kind is FaultKind.FREEZE and self._frozen is not None:
            node, self._frozen = self._frozen, None
            return f"ran {self._run(self.s.thaw_command, node, 'thaw')}"
        if fault.kind is FaultKind.NETWORK_CUT and self._proxy is not None:
            window = self._proxy.end_cut()
            return f"network restored: {window.describe()}" if window else "the network was never cut"
        return "nothing to clear"

    def promote(self, *, timeout_s: float) -> str:
        lost = self._killed or self._frozen
        found: list[str] = []

        def promoted() -> bool:
            leader = self._leader()
            found[:] = [leader.name]
            return leader.name != lost and self._member_api(leader).is_primary()

        try:
            wait_for("Patroni promotes a primary", promoted, timeout_s=timeout_s, interval_s=0.05)
        except HarnessError as exc:
            raise DeadlineExceeded(str(exc)) from exc
        return f"{found[0]} promoted by Patroni"

    def recovered_nodes(self, fault: FaultSpec) -> frozenset[str] | None:
        members = self.cluster().members
        old = self._old_primary
        if fault.kind is FaultKind.NETWORK_CUT:
            return frozenset(_ip_address(m.host, m.port) for m in members if m.name == old)
        if fault.kind in (FaultKind.KILL, FaultKind.SWITCHOVER, FaultKind.FREEZE):
            return frozenset(_ip_address(m.host, m.port) for m in members if m.name != old)
        return None

    def read_back(self, run_id: str) -> frozenset[int]:
        deadline = time.monotonic() + 30
        while True:
            try:
                with self._endpoint.connect() as conn:
                    return pg_canary.read_back(conn, run_id)
            except TargetError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def restore_topology(self, *, timeout_s: float) -> str:
        done: list[str] = []
        if self._frozen is not None:
            done.append(f"ran {self._run(self.s.thaw_command, self._frozen, 'thaw')}")
            self._frozen = None
        if self._killed is not None:
            done.append(f"ran {self._run(self.s.start_command, self._killed, 'start')}")
            self._killed = None
        self._drop_proxy()
        steady = self.check_steady_state(max_lag_s=1.0, timeout_s=timeout_s)
        done.append(f"replicas streaming from {steady['leader']}: {steady['replicas_streaming']}")
        return "; ".join(done)

    def close(self) -> None:
        self.stop_watch()
        self._drop_proxy()

    def _drop_proxy(self) -> None:
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            proxy.stop()

    # ---- plan ----------------------------------------------------------------------------------
    def plan(self, *, rate_hz: float) -> list[Change]:
        """Every REST call and command a failover drill may make here, for `firedrill plan`."""
        s = self.s
        scope = self.scope or "?"
        leader_api = "<leader>/switchover"
        changes = [
            Change(
                "data", "drill lease: a row in firedrill_lease", s.dsn, f"ttl {s.lease_ttl_s:g} s, renewed"
            ),
            Change("data", "CREATE TABLE IF NOT EXISTS firedrill_canary", s.dsn),
            Change("data", "INSERT canary rows", s.dsn, f"{rate_hz:g} per second while each scenario runs"),
            Change(
                "rest", "GET /cluster, /patroni, /config", ", ".join(s.rest_urls), "read-only, while drilling"
            ),
            Change(
                "rest", f"POST {leader_api}", scope, "switchover scenario: leader -> its synchronous standby"
            ),
            Change(
                "local",
                "fault proxy",
                s.dsn,
                "network-cut scenario: probes go through it, traffic blackholed",
            ),
        ]
        for what, cmd in (
            ("kill", s.kill_command),
            ("start", s.start_command),
            ("freeze", s.freeze_command),
            ("thaw", s.thaw_command),
        ):
            if cmd:
                changes.append(
                    Change("command", what, " ".join(cmd), f"{NODE_PLACEHOLDER} = the primary's member name")
                )
        return changes


@contextmanager
def open_patroni_cluster(profile: Profile) -> Iterator[PatroniClusterTarget]:
    if profile.patroni is None:
        raise ConfigError(f"profile '{profile.name}' has no [patroni] section")
    target = PatroniClusterTarget(profile.patroni, password=read_password(profile.patroni.password))
    target.guard()
    try:
        yield target
    finally:
        target.close()


def plan_patroni(profile: Profile) -> tuple[list[str], list[Change]]:
    """Guardrails (read-only REST calls) and the changes a drill would make, nothing changed."""
    if profile.patroni is None:
        raise ConfigError(f"profile '{profile.name}' has no [patroni] section")
    target = PatroniClusterTarget(profile.patroni)  # no password needed to plan
    checks = target.guard()
    faults = ", ".join(sorted(f.value for f in target.supported_faults()))
    return [*checks, f"faults possible here: {faults}"], target.plan(rate_hz=profile.probe.rate_hz)
