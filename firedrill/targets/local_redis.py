"""FailoverTarget over the embedded local Redis staging (1 master, 2 replicas, 3 Sentinels).

Sentinel promotes, not the firedrill: `promote()` only waits until the Sentinels agree on a new
master. The same target also serves the AOF persistence drill (crash the master, restart it in
place, read back what survived), on a staging started with AOF on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from firedrill.errors import ConfigError, HarnessError, SteadyStateNotMet, TargetError
from firedrill.evidence import Node
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.staging.redis_sentinel import AppendFsync, RedisNode, RedisSentinelStaging, RedisStagingConfig
from firedrill.staging.redis_topology import HOST, QUORUM
from firedrill.targets import redis_canary
from firedrill.targets.base import FaultKind, FaultSpec, TargetDescription
from firedrill.targets.redis_canary import RedisCanarySession, SentinelEndpoint

# A persistence drill restarts the master in place: down-after well above a restart (~0.2 s plus the
# AOF load) keeps Sentinel from failing it over meanwhile, which would measure the wrong node.
AOF_DOWN_AFTER_MS = 5000


def address(node: RedisNode) -> str:
    return f"{HOST}:{node.port}"


class LocalRedisTarget:
    def __init__(self, staging: RedisSentinelStaging) -> None:
        self._staging = staging
        self._failed: RedisNode | None = None
        self._frozen: RedisNode | None = None

    @property
    def staging(self) -> RedisSentinelStaging:
        """The staging under this target (knob steps reconfigure it; its lifetime is not ours)."""
        return self._staging

    # ---- description ---------------------------------------------------------------------------
    def describe(self) -> TargetDescription:
        s = self._staging
        cfg = s.config
        versions = s.versions()
        version = next((v for v in versions.values() if v != "unknown"), "unknown")
        return TargetDescription(
            kind="redis",
            environment_kind="local-staging",
            servers={"redis": version},
            nodes=(
                *(
                    Node(name=n.name, role=n.role, address=address(n), version=versions.get(n.name, ""))
                    for n in s.nodes
                ),
                *(
                    Node(name=name, role="sentinel", address=f"{HOST}:{port}", version=versions.get(name, ""))
                    for name, port in s.sentinels
                ),
            ),
            settings={
                "replication": "asynchronous",
                "master_name": cfg.master_name,
                "sentinel_quorum": f"{QUORUM} of {len(s.sentinels)}",
                "down_after_milliseconds": str(cfg.down_after_ms),
                "failover_timeout_ms": str(cfg.failover_timeout_ms),
                "parallel_syncs": str(cfg.parallel_syncs),
                "min_replicas_to_write": str(cfg.min_replicas_to_write),
                "appendonly": "yes" if cfg.appendonly else "no",
                "appendfsync": cfg.appendfsync if cfg.appendonly else "n/a (AOF off)",
                "canary_client": redis_canary.CLIENT_BEHAVIOUR,
                "workdir": str(s.workdir),
            },
        )

    def supported_faults(self) -> frozenset[FaultKind]:
        return frozenset({FaultKind.KILL, FaultKind.SWITCHOVER, FaultKind.FREEZE})

    def promotion_is_manual(self) -> bool:
        return False

    def endpoint(self) -> SentinelEndpoint:
        return SentinelEndpoint(
            sentinels=tuple(self._staging.sentinel_addresses()), service_name=self._staging.master_name
        )

    # ---- drill steps ---------------------------------------------------------------------------
    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        """The staging's steady state (Sentinels agree, replicas linked and promotable), then proof
        that a fresh write reaches both replicas within `max_lag_s` (WAIT)."""
        deadline = time.monotonic() + timeout_s
        report = self._staging.wait_steady(timeout_s=timeout_s)
        master = self._staging.node_by_name(report.master)
        wanted = len(report.replicas)
        acked, why = 0, ""
        # WAIT blocks up to max_lag_s: its own client, whose socket timeout outlasts that.
        with redis.Redis(
            host=master.host,
            port=master.port,
            socket_timeout=max_lag_s + 1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
        ) as client:
            while True:
                try:
                    client.set("firedrill:steady", str(time.time()))
                    acked = int(client.wait(wanted, max(1, int(max_lag_s * 1000))))
                    why = f"only {acked} of {wanted} replicas acknowledged a write within {max_lag_s:g} s"
                except redis.RedisError as exc:
                    why = f"steady-state write on {master.name} failed: {exc}"
                if acked >= wanted:
                    break
                if time.monotonic() >= deadline:
                    raise SteadyStateNotMet(why)
                time.sleep(0.1)
        return {
            "master": f"{master.name} ({address(master)})",
            "replicas": ", ".join(
                f"{r.name} link={r.link_status} lag={r.lag_bytes}B" for r in report.replicas
            ),
            "sentinels_agreeing": f"{len(report.sentinels)}",
            "replica_acks": f"{acked}/{wanted} within {max_lag_s:g} s (WAIT)",
            "steady_after_s": f"{report.waited_s:g}",
        }

    def prepare_canary(self, run_id: str) -> None:
        redis_canary.drop_canary(self._master_client(), run_id)

    def session_factory(self, run_id: str, probe: ProbeConfig) -> SessionFactory:
        endpoint = self.endpoint()
        return lambda: RedisCanarySession(endpoint, run_id, probe)

    def inject(self, fault: FaultSpec) -> str:
        s = self._staging
        if fault.kind is FaultKind.SWITCHOVER:
            self._failed = s.sentinel_failover()
            return f"SENTINEL FAILOVER {s.master_name}: asked to replace {self._label(self._failed)}"
        master = s.current_master()
        if fault.kind is FaultKind.KILL:
            s.kill(master)
            self._failed = master
            return f"SIGKILL to {self._label(master)}"
        if fault.kind is FaultKind.FREEZE:
            down_after_s = s.config.down_after_ms / 1000
            if fault.duration_s <= down_after_s:
                raise ConfigError(
                    f"a freeze of {fault.duration_s:g} s is not longer than down-after-milliseconds "
                    f"({s.config.down_after_ms} ms): Sentinel would not fail over"
                )
            s.freeze(master)
            self._failed = self._frozen = master
            return (
                f"SIGSTOP to {self._label(master)} for {fault.duration_s:g} s (down-after {down_after_s:g} s)"
            )
        raise ConfigError(f"fault '{fault.kind}' is not supported by the local Redis staging")

    def clear(self, fault: FaultSpec) -> str:
        if fault.kind is FaultKind.FREEZE and self._frozen is not None:
            node, self._frozen = self._frozen, None
            self._staging.thaw(node)
            return f"SIGCONT to {self._label(node)}"
        return "nothing to clear"

    def promote(self, *, timeout_s: float) -> str:
        """Wait until a majority of the Sentinels name a master other than the failed one and it
        reports role master."""
        start = time.monotonic()
        failed = self._failed
        last = "no answer yet"
        while True:
            try:
                master = self._staging.current_master()
                if failed is None or master != failed:
                    if master.role == "master":
                        took = time.monotonic() - start
                        return f"Sentinels agree on {self._label(master)} after {took:.2f} s"
                    last = f"Sentinels name {master.name}, which does not report role master yet"
                else:
                    last = f"Sentinels still name {master.name}"
            except HarnessError as exc:
                last = str(exc).splitlines()[0]
            if time.monotonic() - start >= timeout_s:
                raise TargetError(
                    f"Sentinel promoted no replica within {timeout_s:g} s: {last}", code="NO_FAILOVER"
                )
            time.sleep(0.05)

    def recovered_nodes(self, fault: FaultSpec) -> frozenset[str] | None:
        failed = self._failed
        return frozenset(address(n) for n in self._staging.nodes if failed is None or n != failed)

    def read_back(self, run_id: str) -> frozenset[int]:
        return redis_canary.read_back(self._master_client(), run_id)

    def restore_topology(self, *, timeout_s: float) -> str:
        if self._frozen is not None:
            self._staging.thaw(self._frozen)
            self._frozen = None
        report = self._staging.restore_topology(timeout_s=timeout_s)
        self._failed = None
        replicas = ", ".join(r.name for r in report.replicas)
        return f"{report.master} master, {replicas} replicating (after {report.waited_s:g} s)"

    def close(self) -> None:
        """The staging's lifetime belongs to whoever started it."""

    # ---- persistence (AOF) drill -----------------------------------------------------------------
    def persistence_settings(self) -> dict[str, str]:
        """appendonly / appendfsync as the current master runs them (CONFIG GET), not as configured."""
        try:
            got = self._master_client().config_get("append*")
        except redis.RedisError as exc:
            raise TargetError(f"CONFIG GET append* failed: {exc}") from exc
        return {k: str(got.get(k, "?")) for k in ("appendonly", "appendfsync")}

    def master_address(self) -> str:
        return address(self._staging.current_master())

    def crash_master(self) -> str:
        master = self._staging.current_master()
        self._staging.kill(master)
        self._failed = master
        return f"SIGKILL to {self._label(master)}"

    def restart_master(self) -> str:
        """Start the crashed master again in place (same data dir: it loads its AOF), as master.
        The staging waits for it to answer PING (AOF loaded) within its start timeout."""
        node = self._failed
        if node is None:
            raise TargetError("no crashed master to restart")
        start = time.monotonic()
        self._staging.restart(node, as_replica=False)
        took = time.monotonic() - start
        try:
            master = self._staging.current_master()
        except TargetError as exc:
            raise TargetError(f"after restarting {node.name}: {exc}") from exc
        if master != node:
            raise TargetError(
                f"Sentinel failed over to {master.name} while {node.name} restarted, so the survivors "
                f"would be counted on the wrong node (down-after {self._staging.config.down_after_ms} ms)"
            )
        self._failed = None
        return f"{self._label(node)} restarted in place, AOF loaded, answering after {took:.2f} s"

    # ---- helpers -------------------------------------------------------------------------------
    def _master_client(self) -> redis.Redis:
        return self._staging.client(self._staging.current_master())

    @staticmethod
    def _label(node: RedisNode) -> str:
        return f"{node.name} ({address(node)})"


def aof_config(appendfsync: str) -> RedisStagingConfig:
    """The staging for a persistence drill: AOF on with the given fsync policy."""
    if appendfsync not in ("always", "everysec", "no"):
        raise ConfigError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
    policy: AppendFsync = appendfsync  # type: ignore[assignment]
    return RedisStagingConfig(appendonly=True, appendfsync=policy, down_after_ms=AOF_DOWN_AFTER_MS)


@contextlib.contextmanager
def open_local_redis(config: RedisStagingConfig | None = None) -> Iterator[LocalRedisTarget]:
    """Start a staging, yield a target over it, always tear it down."""
    with RedisSentinelStaging(config) as staging:
        yield LocalRedisTarget(staging)
