"""FailoverTarget over the embedded local PostgreSQL staging (primary + streaming standby)."""

from __future__ import annotations

from firedrill.errors import ConfigError, StagingError, TargetError
from firedrill.evidence import Node
from firedrill.faults.proxy import CutMode, FaultProxy
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.staging.postgres import DATABASE, SUPERUSER, PgNode, PgStaging
from firedrill.targets import pg_canary
from firedrill.targets.base import FaultKind, FaultSpec, TargetDescription
from firedrill.targets.pg_canary import PgCanarySession, PgEndpoint


def describe_pg_staging(staging: PgStaging, settings: dict[str, str]) -> TargetDescription:
    """The local PostgreSQL staging as evidence records it; who drives it adds its own settings."""
    version = staging.server_version()
    return TargetDescription(
        kind="postgres",
        environment_kind="local-staging",
        servers={"postgresql": version},
        nodes=tuple(
            Node(name=n.name, role=n.role, address=n.address, version=version) for n in staging.nodes
        ),
        settings=settings,
    )


class LocalPostgresTarget:
    def __init__(self, staging: PgStaging) -> None:
        self._staging = staging
        self._failed_primary: PgNode | None = None
        self._frozen: PgNode | None = None
        # NETWORK_CUT: the probes reach the primary through this proxy (see prepare_fault).
        self._proxy: FaultProxy | None = None
        self._proxied: PgNode | None = None

    @property
    def staging(self) -> PgStaging:
        """The staging under this target (knob steps reconfigure it; its lifetime is not ours)."""
        return self._staging

    # ---- description ---------------------------------------------------------------------------
    def describe(self) -> TargetDescription:
        s = self._staging
        return describe_pg_staging(
            s,
            {
                "replication": (
                    ("quorum (ANY 1)" if s.config.quorum else "synchronous")
                    if s.config.sync_replication
                    else "asynchronous"
                ),
                "synchronous_commit": s.config.synchronous_commit,
                "wal_archive": "on",
                "workdir": str(s.workdir),
            },
        )

    def supported_faults(self) -> frozenset[FaultKind]:
        return frozenset({FaultKind.KILL, FaultKind.STOP, FaultKind.FREEZE, FaultKind.NETWORK_CUT})

    def promotion_is_manual(self) -> bool:
        return True

    def endpoint(self) -> PgEndpoint:
        hosts = tuple(("127.0.0.1", n.port) for n in self._staging.nodes)
        return PgEndpoint(hosts=hosts, dbname=DATABASE, user=SUPERUSER)

    def probe_endpoint(self) -> PgEndpoint:
        """Where probes connect: `endpoint()`, except that after `prepare_fault(NETWORK_CUT)` the
        primary is reached through the adapter's fault proxy (the other nodes still directly)."""
        if self._proxy is None or self._proxied is None:
            return self.endpoint()
        hosts = tuple(
            ("127.0.0.1", self._proxy.port if n is self._proxied else n.port) for n in self._staging.nodes
        )
        return PgEndpoint(hosts=hosts, dbname=DATABASE, user=SUPERUSER)

    def prepare_fault(self, fault: FaultSpec) -> str:
        """A network cut needs the probes routed through a proxy before they start."""
        if fault.kind is not FaultKind.NETWORK_CUT:
            return "nothing to prepare"
        primary = self._staging.primary
        if self._proxy is None or self._proxied is not primary:
            self._drop_proxy()
            self._proxy = FaultProxy(("127.0.0.1", primary.port), name=f"app-{primary.name}").start()
            self._proxied = primary
        return f"probes reach {primary.name} through the fault proxy {self._proxy.address}"

    # ---- drill steps ---------------------------------------------------------------------------
    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        return self._staging.wait_steady(max_lag_s=max_lag_s, timeout_s=timeout_s)

    def prepare_canary(self, run_id: str) -> None:
        with self._staging.connect(self._staging.primary) as conn:
            pg_canary.prepare_canary(conn)

    def session_factory(self, run_id: str, probe: ProbeConfig) -> SessionFactory:
        endpoint = self.probe_endpoint()
        return lambda: PgCanarySession(endpoint, run_id, probe)

    def inject(self, fault: FaultSpec) -> str:
        primary = self._staging.primary
        if fault.kind is FaultKind.KILL:
            self._staging.kill(primary)
            self._failed_primary = primary
            return f"SIGKILL to {primary.name} (postmaster and all backends)"
        if fault.kind is FaultKind.STOP:
            self._staging.stop_graceful(primary)
            self._failed_primary = primary
            return f"pg_ctl stop -m fast on {primary.name}"
        if fault.kind is FaultKind.FREEZE:
            self._staging.freeze(primary)
            self._frozen = primary
            return f"SIGSTOP to {primary.name} for {fault.duration_s:g} s"
        if fault.kind is FaultKind.NETWORK_CUT:
            if self._proxy is None or self._proxied is not primary:
                raise ConfigError("a network cut needs prepare_fault() before the probes start")
            # Ends by itself on the proxy's clock, so the window is exact whoever waits for it.
            self._proxy.cut(fault.duration_s, CutMode.BLACKHOLE)
            return (
                f"network between the probes and {primary.name} blackholed at {self._proxy.address} "
                f"for {fault.duration_s:g} s"
            )
        raise ConfigError(f"fault '{fault.kind}' is not supported by the local PostgreSQL staging")

    def clear(self, fault: FaultSpec) -> str:
        if fault.kind is FaultKind.FREEZE and self._frozen is not None:
            node, self._frozen = self._frozen, None
            self._staging.thaw(node)
            return f"SIGCONT to {node.name}"
        if fault.kind is FaultKind.NETWORK_CUT and self._proxy is not None:
            window = self._proxy.end_cut()
            return f"network restored: {window.describe()}" if window else "the network was never cut"
        return "nothing to clear"

    def promote(self, *, timeout_s: float) -> str:
        try:
            standby = self._staging.standby
        except StagingError as exc:
            raise TargetError(f"no standby to promote: {exc}") from exc
        self._staging.promote(standby, timeout_s=timeout_s)
        return f"{standby.name} promoted with pg_promote()"

    def recovered_nodes(self, fault: FaultSpec) -> frozenset[str] | None:
        if fault.kind in (FaultKind.FREEZE, FaultKind.NETWORK_CUT):
            return frozenset({self._staging.primary.address})
        failed = self._failed_primary
        return frozenset(n.address for n in self._staging.nodes if failed is None or n is not failed)

    def read_back(self, run_id: str) -> frozenset[int]:
        with self._staging.connect(self._staging.primary) as conn:
            return pg_canary.read_back(conn, run_id)

    def restore_topology(self, *, timeout_s: float) -> str:
        if self._frozen is not None:
            self._staging.thaw(self._frozen)
            self._frozen = None
        self._drop_proxy()
        done = self._staging.restore_topology(timeout_s=timeout_s)
        self._failed_primary = None
        return done

    def close(self) -> None:
        """The staging's lifetime belongs to whoever started it; the fault proxy is ours."""
        self._drop_proxy()

    def _drop_proxy(self) -> None:
        proxy, self._proxy, self._proxied = self._proxy, None, None
        if proxy is not None:
            proxy.stop()
