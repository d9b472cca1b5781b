"""The local PostgreSQL pair and Redis Sentinel set as resources of a zone drill (`ZoneResource`).

Every control call (steady state, promotion, read-back, restore) runs in the control zone; the probes'
sessions connect from their own zone (the drill wraps their factories). Node identities are
"<zone address>:<port>", as the probes report the node that acknowledged a write.

PostgreSQL clients list the hosts standbys first, primary last (libpq multi-host with
target_session_attrs=read-write). Whatever the order, a connect tries the hosts one by one with at
least libpq's 2 s minimum connect timeout each, so a blackholed host listed first would outlast the
probe's 0.5 s deadline on every attempt and hide the recovery; listed last, it is only reached while
no other host is writable yet. After a failover the next scenario's order follows the new roles.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Protocol

from firedrill.errors import HarnessError, StagingError, TargetError
from firedrill.evidence import Node
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.staging.postgres import DATABASE, SUPERUSER, PgNode, PgStaging
from firedrill.staging.redis_sentinel import RedisNode, RedisSentinelStaging
from firedrill.targets import pg_canary, redis_canary
from firedrill.targets.base import TargetDescription
from firedrill.targets.local_postgres import describe_pg_staging
from firedrill.targets.local_redis import LocalRedisTarget
from firedrill.targets.pg_canary import PgCanarySession, PgEndpoint
from firedrill.targets.redis_canary import RedisCanarySession, SentinelEndpoint


class ZoneHost(Protocol):
    def control(self) -> AbstractContextManager[None]: ...

    def zone_of(self, host: str) -> str: ...


class ZonePostgres:
    name = "postgres"

    def __init__(self, staging: PgStaging, zones: ZoneHost) -> None:
        self.staging = staging
        self._zones = zones
        self._primary: PgNode | None = None
        self._fenced: list[PgNode] = []

    def describe(self) -> TargetDescription:
        s = self.staging
        return describe_pg_staging(
            s,
            {
                "postgres.replication": "synchronous" if s.config.sync_replication else "asynchronous",
                "postgres.zones": ", ".join(f"{n.name}@{self._zones.zone_of(n.host)}" for n in s.nodes),
                "postgres.client": "libpq multi-host, target_session_attrs=read-write, primary listed last",
            },
        )

    def placements(self) -> list[tuple[str, str, str]]:
        return [(n.name, self._zones.zone_of(n.host), n.host) for n in self.staging.nodes]

    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        with self._zones.control():
            return self.staging.wait_steady(max_lag_s=max_lag_s, timeout_s=timeout_s)

    def prepare_canary(self, key: str) -> None:
        with self._zones.control(), self.staging.connect(self.staging.primary) as conn:
            pg_canary.prepare_canary(conn)

    def endpoint(self) -> PgEndpoint:
        """Every node on its zone address, standbys first and the primary last (see above)."""
        nodes = sorted(self.staging.nodes, key=lambda n: n.role == "primary")
        return PgEndpoint(hosts=tuple((n.host, n.port) for n in nodes), dbname=DATABASE, user=SUPERUSER)

    def session_factory(self, key: str, probe: ProbeConfig) -> SessionFactory:
        endpoint = self.endpoint()
        return lambda: PgCanarySession(endpoint, key, probe)

    def before_fault(self) -> str:
        self._primary = self.staging.primary
        return f"primary {self._primary.name} in zone {self._zones.zone_of(self._primary.host)}"

    def fence(self, cut_zones: frozenset[str]) -> str:
        cut = [n for n in self.staging.nodes if self._zones.zone_of(n.host) in cut_zones and n.role != "down"]
        for node in cut:
            node.role = "down"  # cut off: the staging treats it as lost (restore re-clones it)
        self._fenced += cut
        if not cut:
            return "no PostgreSQL node in the cut zones"
        return ", ".join(f"{n.name} ({n.address}) cut off" for n in cut)

    def promotion_is_manual(self) -> bool:
        return True

    def promote(self, *, timeout_s: float) -> str:
        if not self._fenced or self._primary not in self._fenced:
            return "the primary is not in a cut zone: nothing to promote"
        try:
            standby = self.staging.standby
        except StagingError as exc:
            raise TargetError(f"no standby outside the cut zones to promote: {exc}") from exc
        with self._zones.control():
            self.staging.promote(standby, timeout_s=timeout_s)
        return f"{standby.name} in zone {self._zones.zone_of(standby.host)} promoted with pg_promote()"

    def recovered_nodes(self) -> frozenset[str] | None:
        return frozenset(n.address for n in self.staging.nodes if n not in self._fenced)

    def read_back(self, key: str) -> frozenset[int]:
        with self._zones.control(), self.staging.connect(self.staging.primary) as conn:
            return pg_canary.read_back(conn, key)

    def restore_topology(self, *, timeout_s: float) -> str:
        """The cut-off nodes come back as standbys of the new primary (the network must be healed)."""
        with self._zones.control():
            done = self.staging.restore_topology(timeout_s=timeout_s)
        self._fenced = []
        self._primary = None
        return f"postgres: {done}"


class ZoneRedis:
    name = "redis"

    def __init__(self, staging: RedisSentinelStaging, zones: ZoneHost) -> None:
        self.staging = staging
        self._zones = zones
        self._target = LocalRedisTarget(staging)
        self._master: RedisNode | None = None
        self._failed: RedisNode | None = None

    def _addr(self, node: RedisNode) -> str:
        return f"{node.host}:{node.port}"

    def describe(self) -> TargetDescription:
        with self._zones.control():
            base = self._target.describe()
        zones = [f"{name}@{zone}" for name, zone, _ in self.placements()]
        settings = {f"redis.{k}": v for k, v in base.settings.items() if k != "workdir"}
        return TargetDescription(
            kind="redis",
            environment_kind="local-staging",
            servers=base.servers,
            nodes=tuple(
                Node(
                    name=n.name, role=n.role, address=f"{self._host_of(n.name)}:{n.address.rsplit(':', 1)[1]}"
                )
                for n in base.nodes
            ),
            settings={**settings, "redis.zones": ", ".join(zones)},
        )

    def _host_of(self, name: str) -> str:
        placement = dict(self.staging.config.placement)
        return placement[name].host if name in placement else "127.0.0.1"

    def placements(self) -> list[tuple[str, str, str]]:
        names = [n.name for n in self.staging.nodes] + [name for name, _ in self.staging.sentinels]
        return [(name, self._zones.zone_of(self._host_of(name)), self._host_of(name)) for name in names]

    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        with self._zones.control():
            return self._target.check_steady_state(max_lag_s=max_lag_s, timeout_s=timeout_s)

    def prepare_canary(self, key: str) -> None:
        with self._zones.control():
            self._target.prepare_canary(key)

    def session_factory(self, key: str, probe: ProbeConfig) -> SessionFactory:
        endpoint = SentinelEndpoint(
            sentinels=tuple(self.staging.sentinel_addresses()), service_name=self.staging.master_name
        )
        return lambda: RedisCanarySession(endpoint, key, probe)

    def before_fault(self) -> str:
        with self._zones.control():
            self._master = self.staging.current_master()
        return f"master {self._master.name} in zone {self._zones.zone_of(self._master.host)}"

    def fence(self, cut_zones: frozenset[str]) -> str:
        master = self._master
        if master is not None and self._zones.zone_of(master.host) in cut_zones:
            self._failed = master
            return f"master {master.name} ({self._addr(master)}) cut off: Sentinel must promote a replica"
        return "the Redis master is not in a cut zone"

    def promotion_is_manual(self) -> bool:
        return False

    def promote(self, *, timeout_s: float) -> str:
        """Wait until a majority of the Sentinels name a master outside the cut zone that reports role
        master (Sentinel promotes, firedrill only watches)."""
        failed = self._failed
        if failed is None:
            return "the master is not in a cut zone: Sentinel has nothing to promote"
        start = time.monotonic()
        last = "no answer yet"
        with self._zones.control():
            while True:
                try:
                    master = self.staging.current_master()
                    if master != failed and master.role == "master":
                        took = time.monotonic() - start
                        where = self._zones.zone_of(master.host)
                        return f"Sentinels agree on {master.name} in zone {where} after {took:.2f} s"
                    last = f"Sentinels name {master.name}"
                except HarnessError as exc:
                    last = str(exc).splitlines()[0]
                if time.monotonic() - start >= timeout_s:
                    raise TargetError(f"Sentinel promoted no replica within {timeout_s:g} s: {last}")
                time.sleep(0.05)

    def recovered_nodes(self) -> frozenset[str] | None:
        failed = self._failed
        return frozenset(self._addr(n) for n in self.staging.nodes if failed is None or n != failed)

    def read_back(self, key: str) -> frozenset[int]:
        with self._zones.control():
            return redis_canary.read_back(self.staging.client(self.staging.current_master()), key)

    def restore_topology(self, *, timeout_s: float) -> str:
        with self._zones.control():
            report = self.staging.restore_topology(timeout_s=timeout_s)
        self._failed = self._master = None
        replicas = ", ".join(r.name for r in report.replicas)
        return f"redis: {report.master} master, {replicas} replicating (after {report.waited_s:g} s)"
