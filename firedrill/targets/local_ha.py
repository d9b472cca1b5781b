"""FailoverTarget over the local HA staging (3 etcd, 3 Patroni/PostgreSQL, HAProxy): Patroni, not
firedrill, detects the loss of the primary and promotes a replica; firedrill only injects node-level
faults and watches the leader key and every node's role while the drill runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from firedrill.config import Profile
from firedrill.errors import ConfigError, DeadlineExceeded, HarnessError, SteadyStateNotMet, TargetError
from firedrill.evidence import Node
from firedrill.faults.proxy import CutMode, FaultProxy
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.staging.etcd import EtcdMember
from firedrill.staging.patroni import DATABASE, SUPERUSER, PatroniNode, PatroniStaging, PatroniStagingConfig
from firedrill.staging.patroni_api import failover_settings
from firedrill.staging.rest import RestError, call
from firedrill.staging.service import wait_for
from firedrill.targets import pg_canary
from firedrill.targets.base import Change, FaultKind, FaultSpec, TargetDescription
from firedrill.targets.ha_watch import HaWatcher
from firedrill.targets.pg_canary import PgCanarySession, PgEndpoint
from firedrill.timeline import Timeline

# What each fault does here, for `firedrill plan` (one per scenario); its keys are the supported faults.
FAULT_PLAN: dict[FaultKind, str] = {
    FaultKind.KILL: "SIGKILL of Patroni and PostgreSQL on the primary's node at once (the node is lost)",
    FaultKind.FREEZE: "SIGSTOP of Patroni and PostgreSQL on the primary's node for the scenario's time, "
    "then SIGCONT",
    FaultKind.NETWORK_CUT: "the probes reach the primary through firedrill's fault proxy, which blackholes "
    "their traffic for the scenario's time",
    FaultKind.DCS_QUORUM_LOSS: "a majority of the etcd members stopped for the scenario's time, then started",
    FaultKind.SWITCHOVER: "POST /switchover to the leader's REST API, its synchronous standby as candidate",
}


class LocalHaTarget:
    def __init__(self, staging: PatroniStaging, *, client: str = "haproxy") -> None:
        self._staging = staging
        self._client = client
        self._failed: PatroniNode | None = None  # killed: restarted by restore_topology
        self._frozen: PatroniNode | None = None
        self._old_primary: PatroniNode | None = None  # the primary before the fault
        self._etcd_down: list[EtcdMember] = []
        self._restarted_etcd: list[EtcdMember] = []  # started again by clear(), healthy not yet checked
        self._proxy: FaultProxy | None = None
        self._watcher: HaWatcher | None = None
        self._settings: dict[str, str] | None = None

    # ---- description ---------------------------------------------------------------------------
    def describe(self) -> TargetDescription:
        s = self._staging
        leader = s.leader()
        status = leader.api().status()
        return TargetDescription(
            kind="postgres",
            environment_kind="local-ha-staging",
            servers={
                "postgresql": s.server_version(),
                "patroni": status.version or "unknown",
                "etcd": self._etcd_version(),
                "dcs": f"etcd3 x{len(s.etcd.members) if s.etcd else 0}",
            },
            nodes=tuple(
                Node(name=n.name, role=_role(n, leader), address=n.address, version=s.server_version())
                for n in s.nodes
            ),
            settings=self._ha_settings(),
        )

    def _ha_settings(self) -> dict[str, str]:
        """Patroni's dynamic configuration as the cluster holds it (GET /config), not as we asked."""
        if self._settings is None:
            self._settings = failover_settings(self._staging.leader().api().config())
            self._settings.update(
                {
                    "scope": self._staging.scope,
                    "client_endpoint": self._describe_client(),
                    "workdir": str(self._staging.workdir),
                }
            )
        return dict(self._settings)

    def _describe_client(self) -> str:
        if self._client == "multi-host":
            return "libpq multi-host, target_session_attrs=read-write"
        return f"HAProxy {self._staging.endpoint_address} (checks Patroni REST /primary)"

    def _etcd_version(self) -> str:
        etcd = self._staging.etcd
        if etcd is None or not etcd.members:
            return "unknown"
        with contextlib.suppress(HarnessError):
            body = call("GET", f"{etcd.members[0].client_url}/version", timeout_s=1).body
            if isinstance(body, dict):
                return str(body.get("etcdserver", "unknown"))
        return "unknown"

    def supported_faults(self) -> frozenset[FaultKind]:
        return frozenset(FAULT_PLAN)

    def promotion_is_manual(self) -> bool:
        return False

    # ---- where clients connect -----------------------------------------------------------------
    def endpoint(self) -> PgEndpoint:
        if self._client == "multi-host":
            hosts = tuple(("127.0.0.1", n.pg_port) for n in self._staging.nodes)
        else:
            host, port = self._staging.endpoint_address.rsplit(":", 1)
            hosts = ((host, int(port)),)
        return PgEndpoint(hosts=hosts, dbname=DATABASE, user=SUPERUSER)

    def probe_endpoint(self) -> PgEndpoint:
        """`endpoint()`, or through the fault proxy once a network cut was prepared."""
        if self._proxy is None:
            return self.endpoint()
        return PgEndpoint(hosts=(("127.0.0.1", self._proxy.port),), dbname=DATABASE, user=SUPERUSER)

    def prepare_fault(self, fault: FaultSpec) -> str:
        """A network cut needs the probes routed through a proxy in front of the application endpoint
        (HAProxy; in multi-host mode, the current primary) before they start."""
        if fault.kind is not FaultKind.NETWORK_CUT:
            return "nothing to prepare"
        if self._proxy is None:
            if self._client == "multi-host":
                upstream = ("127.0.0.1", self._staging.leader().pg_port)
            else:
                host, port = self._staging.endpoint_address.rsplit(":", 1)
                upstream = (host, int(port))
            self._proxy = FaultProxy(upstream, name="app-primary").start()
        return f"probes reach the primary through the fault proxy {self._proxy.address}"

    # ---- the HA manager's view -----------------------------------------------------------------
    def start_watch(self, timeline: Timeline) -> None:
        self.stop_watch()
        etcd, key = self._staging.etcd, self._staging.leader_key
        assert etcd is not None

        def leader() -> str | None:
            kv = etcd.get(key)
            return kv.value if kv is not None else None

        apis = [n.api(timeout_s=0.3) for n in self._staging.nodes]
        self._watcher = HaWatcher(timeline, apis, leader).start()

    def stop_watch(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def wait_rejoined(self, *, timeout_s: float) -> str:
        node = self._old_primary
        if node is None:
            raise TargetError("no fault was injected, so no old primary to rejoin")
        if self._failed is node:
            self._staging.start_node(node)
            self._failed = None
        began = time.monotonic()

        def rejoined() -> bool:
            member = next((m for m in self._staging.cluster().members if m.name == node.name), None)
            return member is not None and not member.is_leader and member.state == "streaming"

        try:
            wait_for(f"{node.name} streaming as a replica", rejoined, timeout_s=timeout_s, interval_s=0.1)
        except HarnessError as exc:
            raise DeadlineExceeded(str(exc)) from exc
        leader = self._staging.leader()
        waited = time.monotonic() - began
        return f"{node.name} streams from {leader.name} as a replica ({waited:.1f} s after the check began)"

    # ---- drill steps ---------------------------------------------------------------------------
    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            view = self._staging.wait_healthy(timeout_s=max(1.0, deadline - time.monotonic()))
            leader = self._staging.leader()
            try:
                lag = self._commit_lag(leader, max_lag_s=max_lag_s, timeout_s=timeout_s)
                break
            except SteadyStateNotMet:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        sync = [m.name for m in view.members if m.role == "sync_standby"]
        return {
            "leader": leader.name,
            "timeline": str(next((m.timeline for m in view.members if m.is_leader), "?")),
            "replicas_streaming": ", ".join(m.name for m in view.replicas() if m.state == "streaming"),
            "sync_standby": ", ".join(sync) or "none",
            "replay_lag_s": f"{lag:.3f}",
            "max_lag_s": f"{max_lag_s:g}",
        }

    def _commit_lag(self, leader: PatroniNode, *, max_lag_s: float, timeout_s: float) -> float:
        """A fresh commit on the leader seen on every replica within `max_lag_s`: the seconds it took."""
        marker = time.time_ns()
        try:
            with self._staging.connect(leader) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS firedrill_marker (v bigint)")
                conn.execute("INSERT INTO firedrill_marker VALUES (%s)", (marker,))
            sent = time.monotonic()
            worst = 0.0
            for node in self._staging.nodes:
                if node is leader:
                    continue
                conns: list[psycopg.Connection[tuple[object, ...]]] = []

                def visible(
                    n: PatroniNode = node, held: list[psycopg.Connection[tuple[object, ...]]] = conns
                ) -> bool:
                    try:
                        if not held:  # a new replica may not have the database yet: connect again
                            held.append(self._staging.connect(n))
                        row = (
                            held[0]
                            .execute("SELECT 1 FROM firedrill_marker WHERE v = %s", (marker,))
                            .fetchone()
                        )
                    except psycopg.Error:  # the table not replayed yet, or the connection lost
                        for c in held:
                            c.close()
                        held.clear()
                        return False
                    return row is not None

                try:
                    wait_for(f"commit visible on {node.name}", visible, timeout_s=max_lag_s, interval_s=0.005)
                finally:
                    for c in conns:
                        c.close()
                worst = max(worst, time.monotonic() - sent)
        except (HarnessError, psycopg.Error) as exc:
            raise SteadyStateNotMet(f"replication lag over {max_lag_s:g} s: {exc}".splitlines()[0]) from exc
        return worst

    def prepare_canary(self, run_id: str) -> None:
        with self._staging.connect(self._staging.leader()) as conn:
            pg_canary.prepare_canary(conn)

    def session_factory(self, run_id: str, probe: ProbeConfig) -> SessionFactory:
        endpoint = self.probe_endpoint()
        return lambda: PgCanarySession(endpoint, run_id, probe)

    def inject(self, fault: FaultSpec) -> str:
        s = self._staging
        if fault.kind is FaultKind.DCS_QUORUM_LOSS:
            assert s.etcd is not None
            members = list(s.etcd.members[: len(s.etcd.members) // 2 + 1])
            s.stop_etcd(members)
            self._etcd_down = members
            self._old_primary = None
            left = len(s.etcd.members) - len(members)
            names = ", ".join(m.name for m in members)
            return f"stopped {names}: {left} of {len(s.etcd.members)} etcd members left, no quorum"
        leader = s.leader()
        self._old_primary = leader
        if fault.kind is FaultKind.KILL:
            s.kill_node(leader)
            self._failed = leader
            return f"SIGKILL to Patroni and PostgreSQL on {leader.name} (the node is lost)"
        if fault.kind is FaultKind.FREEZE:
            s.freeze_node(leader)
            self._frozen = leader
            return f"SIGSTOP to Patroni and PostgreSQL on {leader.name} for {fault.duration_s:g} s"
        if fault.kind is FaultKind.SWITCHOVER:
            return self._switchover(leader)
        if fault.kind is FaultKind.NETWORK_CUT:
            if self._proxy is None:
                raise ConfigError("a network cut needs prepare_fault() before the probes start")
            self._proxy.cut(fault.duration_s, CutMode.BLACKHOLE)
            return (
                f"network between the probes and the primary ({leader.name}) blackholed "
                f"for {fault.duration_s:g} s"
            )
        raise ConfigError(f"fault '{fault.kind}' is not supported by the local HA staging")

    def _switchover(self, leader: PatroniNode) -> str:
        candidate = self._staging.cluster().switchover_candidate()
        if candidate is None:
            raise TargetError("no streaming replica to switch over to")
        try:
            reply = leader.api().switchover(leader.name, candidate.name, timeout_s=60)
        except RestError as exc:
            raise TargetError(f"switchover request failed: {exc}") from exc
        if not reply.ok:
            raise TargetError(f"Patroni refused the switchover: HTTP {reply.status} {reply.text()[:200]}")
        return (
            f"POST {leader.rest_url}/switchover leader={leader.name} candidate={candidate.name}: "
            f"{reply.text()[:120]}"
        )

    def clear(self, fault: FaultSpec) -> str:
        if fault.kind is FaultKind.FREEZE and self._frozen is not None:
            node, self._frozen = self._frozen, None
            self._staging.thaw_node(node)
            return f"SIGCONT to Patroni and PostgreSQL on {node.name}"
        if fault.kind is FaultKind.NETWORK_CUT and self._proxy is not None:
            window = self._proxy.end_cut()
            return f"network restored: {window.describe()}" if window else "the network was never cut"
        if fault.kind is FaultKind.DCS_QUORUM_LOSS and self._etcd_down:
            members, self._etcd_down = self._etcd_down, []
            # Start, do not wait: the fault ends when the members are back, not once they are healthy
            # (quorum returns within about a second, and Patroni acts on it at once).
            for m in members:
                m.service.start()
            self._restarted_etcd = members
            return f"started {', '.join(m.name for m in members)} again: etcd gets its quorum back"
        return "nothing to clear"

    def promote(self, *, timeout_s: float) -> str:
        """Patroni promotes; this only waits for a running leader that answers /primary (and that is
        not the lost node after a kill or a freeze)."""
        lost = self._failed or self._frozen
        found: list[PatroniNode] = []

        def promoted() -> bool:
            leader = self._staging.leader()
            if lost is not None and leader is lost:
                return False
            found[:] = [leader]
            return leader.api(timeout_s=0.5).is_primary()

        try:
            wait_for("Patroni promotes a primary", promoted, timeout_s=timeout_s, interval_s=0.02)
        except HarnessError as exc:
            raise DeadlineExceeded(str(exc)) from exc
        return f"{found[0].name} promoted by Patroni"

    def recovered_nodes(self, fault: FaultSpec) -> frozenset[str] | None:
        old = self._old_primary
        if fault.kind is FaultKind.NETWORK_CUT and old is not None:
            return frozenset({old.address})
        if fault.kind in (FaultKind.KILL, FaultKind.SWITCHOVER) or (
            fault.kind is FaultKind.FREEZE and fault.duration_s >= float(self._ha_settings()["ttl"])
        ):
            return frozenset(n.address for n in self._staging.nodes if n is not old)
        return None

    def read_back(self, run_id: str) -> frozenset[int]:
        leader = self._wait_leader(30)
        with self._staging.connect(leader) as conn:
            return pg_canary.read_back(conn, run_id)

    def _wait_leader(self, timeout_s: float) -> PatroniNode:
        found: list[PatroniNode] = []

        def has_leader() -> bool:
            found[:] = [self._staging.leader()]
            return True

        wait_for("a running leader", has_leader, timeout_s=timeout_s)
        return found[0]

    def restore_topology(self, *, timeout_s: float) -> str:
        done: list[str] = []
        if self._frozen is not None:
            self._staging.thaw_node(self._frozen)
            done.append(f"{self._frozen.name} thawed")
            self._frozen = None
        if self._etcd_down or self._restarted_etcd:
            members = self._etcd_down or self._restarted_etcd
            self._staging.start_etcd(members)  # starts what is down, waits until each is healthy
            done.append(f"{', '.join(m.name for m in members)} healthy")
            self._etcd_down, self._restarted_etcd = [], []
        if self._failed is not None:
            self._staging.start_node(self._failed)
            done.append(f"Patroni restarted on {self._failed.name}")
            self._failed = None
        self._drop_proxy()
        view = self._staging.wait_healthy(timeout_s=timeout_s)
        leader = view.leader.name if view.leader else "?"
        done.append(f"{len(view.members) - 1} replicas streaming from {leader}")
        return "; ".join(done)

    def close(self) -> None:
        """The staging's lifetime belongs to whoever started it; the watcher and the proxy are ours."""
        self.stop_watch()
        self._drop_proxy()

    def _drop_proxy(self) -> None:
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            proxy.stop()


def _role(node: PatroniNode, leader: PatroniNode) -> str:
    return "primary" if node is leader else "replica"


@contextmanager
def open_local_ha(profile: Profile) -> Iterator[LocalHaTarget]:
    """Start the HA staging for a `local-ha` profile, yield its target, tear everything down."""
    ha = profile.local_ha
    config = PatroniStagingConfig(
        nodes=ha.nodes,
        etcd_members=ha.etcd_members,
        ttl=ha.ttl,
        loop_wait=ha.loop_wait,
        retry_timeout=ha.retry_timeout,
        maximum_lag_on_failover=ha.maximum_lag_on_failover,
        synchronous_mode=ha.synchronous_mode,
    )
    with PatroniStaging(config) as staging:
        target = LocalHaTarget(staging, client=ha.client)
        try:
            yield target
        finally:
            target.close()


def plan_local_ha(profile: Profile) -> tuple[list[str], list[Change]]:
    """What a drill on the local HA staging starts and does, for `firedrill plan` (nothing started)."""
    ha = profile.local_ha
    sync = str(ha.synchronous_mode).lower()
    checks = [
        "local HA staging: nothing outside a temp directory is touched",
        f"Patroni settings: ttl {ha.ttl} s, loop_wait {ha.loop_wait} s, retry_timeout {ha.retry_timeout} s, "
        f"maximum_lag_on_failover {ha.maximum_lag_on_failover} bytes, synchronous_mode {sync}",
    ]
    clients = (
        "the probes connect there"
        if ha.client == "haproxy"
        else "the probes connect to the nodes in a libpq multi-host conninfo, target_session_attrs=read-write"
    )
    where = "in a new /tmp/firedrill-ha-* directory on free loopback ports"
    rate = profile.probe.rate_hz
    changes = [
        Change("local", "start", f"{ha.etcd_members} etcd members", f"etcd 3.4, one data dir each, {where}"),
        Change(
            "local",
            "start",
            f"{ha.nodes} PostgreSQL nodes, each managed by Patroni",
            f"etcd3 DCS, synchronous_mode {sync}, use_pg_rewind; replicas cloned with pg_basebackup",
        ),
        Change(
            "local",
            "start",
            "HAProxy",
            "one port forwarded to the node answering 200 on Patroni's REST /primary (checked every "
            f"250 ms); {clients}",
        ),
        Change("data", "CREATE TABLE IF NOT EXISTS", pg_canary.CANARY_TABLE, "on the primary"),
        Change("data", "INSERT", pg_canary.CANARY_TABLE, f"~{rate:g} rows/s while each scenario runs"),
        *(
            Change("rest" if f is FaultKind.SWITCHOVER else "local", "fault", f.value, what)
            for f, what in FAULT_PLAN.items()
        ),
        Change(
            "local",
            "no promotion",
            "by firedrill",
            "Patroni detects the loss, elects a new leader and promotes it; firedrill only watches the etcd "
            "leader key and every node's GET /patroni (20 Hz)",
        ),
        Change("local", "teardown", "every process and the temp directory", "always, also on failure"),
    ]
    return checks, changes
