"""FailoverTarget over the embedded local PostgreSQL staging (primary + streaming standby)."""

from __future__ import annotations

from harness.errors import ConfigError, StagingError, TargetError
from harness.evidence import Node
from harness.probes import ProbeConfig, SessionFactory
from harness.staging.postgres import DATABASE, SUPERUSER, PgNode, PgStaging
from harness.targets import pg_canary
from harness.targets.base import FaultKind, FaultSpec, TargetDescription
from harness.targets.pg_canary import PgCanarySession, PgEndpoint


class LocalPostgresTarget:
    def __init__(self, staging: PgStaging) -> None:
        self._staging = staging
        self._failed_primary: PgNode | None = None
        self._frozen: PgNode | None = None

    # ---- description ---------------------------------------------------------------------------
    def describe(self) -> TargetDescription:
        s = self._staging
        return TargetDescription(
            kind="postgres",
            environment_kind="local-staging",
            servers={"postgresql": s.server_version()},
            nodes=tuple(
                Node(name=n.name, role=n.role, address=n.address, version=s.server_version()) for n in s.nodes
            ),
            settings={
                "replication": "synchronous" if s.config.sync_replication else "asynchronous",
                "wal_archive": "on",
                "workdir": str(s.workdir),
            },
        )

    def supported_faults(self) -> frozenset[FaultKind]:
        return frozenset({FaultKind.KILL, FaultKind.STOP, FaultKind.FREEZE})

    def promotion_is_manual(self) -> bool:
        return True

    def endpoint(self) -> PgEndpoint:
        hosts = tuple(("127.0.0.1", n.port) for n in self._staging.nodes)
        return PgEndpoint(hosts=hosts, dbname=DATABASE, user=SUPERUSER)

    # ---- drill steps ---------------------------------------------------------------------------
    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        return self._staging.wait_steady(max_lag_s=max_lag_s, timeout_s=timeout_s)

    def prepare_canary(self, run_id: str) -> None:
        with self._staging.connect(self._staging.primary) as conn:
            pg_canary.prepare_canary(conn)

    def session_factory(self, run_id: str, probe: ProbeConfig) -> SessionFactory:
        endpoint = self.endpoint()
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
        raise ConfigError(f"fault '{fault.kind}' is not supported by the local PostgreSQL staging")

    def clear(self, fault: FaultSpec) -> str:
        if fault.kind is FaultKind.FREEZE and self._frozen is not None:
            node, self._frozen = self._frozen, None
            self._staging.thaw(node)
            return f"SIGCONT to {node.name}"
        return "nothing to clear"

    def promote(self, *, timeout_s: float) -> str:
        try:
            standby = self._staging.standby
        except StagingError as exc:
            raise TargetError(f"no standby to promote: {exc}") from exc
        self._staging.promote(standby, timeout_s=timeout_s)
        return f"{standby.name} promoted with pg_promote()"

    def recovered_nodes(self, fault: FaultSpec) -> frozenset[str] | None:
        if fault.kind is FaultKind.FREEZE:
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
        done = self._staging.restore_topology(timeout_s=timeout_s)
        self._failed_primary = None
        return done

    def close(self) -> None:
        """The staging's lifetime belongs to whoever started it."""
