"""The zones of the local staging, as a `ZoneOutage`: a zone fabric (`firedrill.staging.zones`), the
faults on it (`firedrill.faults.zones`), and the PostgreSQL pair and Redis Sentinel set placed in the
zones the profile names (`[profiles.<name>.zones]`), started afresh for each scenario; and, when a
scenario asks for it, the reference application inside a zone in front of them (`service`).

Teardown order, on every exit path: the application, the stagings' processes, then the faults healed,
then the fabric (every namespace, bridge and veth deleted, and any process still inside a zone
killed). A scenario that leaves a fault on does not leak it into
the next one: `heal()` runs before the topology is restored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace

from firedrill.config import Profile
from firedrill.config_zones import ZoneSettings
from firedrill.errors import ConfigError, SteadyStateNotMet
from firedrill.evidence_zones import FisRecord, ZoneEvidence, ZoneFaultRecord, ZoneLinkRecord
from firedrill.faults.zones import ZoneFaults
from firedrill.probes import ProbeSession, SessionFactory
from firedrill.staging.placement import Placement, Placements
from firedrill.staging.postgres import PgStaging
from firedrill.staging.redis_sentinel import NODE_NAMES, SENTINEL_NAMES, RedisSentinelStaging
from firedrill.staging.reference_app import ReferenceApp
from firedrill.staging.zones import ZoneFabric
from firedrill.targets.knobs import pg_staging_config, redis_staging_config
from firedrill.targets.zone_base import ZoneResource
from firedrill.targets.zone_service import ZoneService
from firedrill.targets.zone_stores import ZonePostgres, ZoneRedis

MECHANISM = (
    "One Linux network namespace per zone, each joined by a veth pair to a bridge in a namespace of its "
    "own (iproute2); a lost zone's link is set down, a partitioned zone's link moves to a second bridge; "
    "servers run inside their zone (ip netns exec) on the zone's address, probes connect from their "
    "zone (setns on the probe's worker thread); control traffic uses a control zone no fault touches"
)
# The application's PostgreSQL connections give up on a peer that stopped answering after this long
# (about 1.4 s, at the next retransmission). Without it, a request on a pooled connection to the lost
# zone's primary hangs for as long as TCP retransmits (still hanging 30 s later here), and holds its
# slot of the pool meanwhile.
APP_TCP_USER_TIMEOUT_MS = 1000


class LocalZoneOutage:
    mechanism = MECHANISM
    partitions = True

    def __init__(self, fabric: ZoneFabric, settings: ZoneSettings, profile: Profile) -> None:
        self.fabric = fabric
        self.settings = settings
        self.profile = profile
        self.faults = ZoneFaults(fabric)
        self._stack = contextlib.ExitStack()
        self._postgres: ZonePostgres | None = None
        self._redis: ZoneRedis | None = None

    # ---- the resources, started on first use -----------------------------------------------------
    def placement(self, zone: str) -> Placement:
        return Placement(self.fabric.address(zone), self.fabric.launcher(zone))

    def postgres(self) -> ZonePostgres:
        if self._postgres is None:
            primary, standby = self.settings.postgres
            config = replace(
                pg_staging_config(self.profile),
                placement=(("pg-a", self.placement(primary)), ("pg-b", self.placement(standby))),
                trusted_networks=(str(self.fabric.network),),
            )
            with self.control():
                staging = self._stack.enter_context(PgStaging(config))
            self._postgres = ZonePostgres(staging, self)
        return self._postgres

    def redis(self) -> ZoneRedis:
        if self._redis is None:
            names = (*NODE_NAMES, *SENTINEL_NAMES)
            zones = (*self.settings.redis, *self.settings.sentinels)
            placement: Placements = tuple(
                (name, self.placement(zone)) for name, zone in zip(names, zones, strict=True)
            )
            config = replace(redis_staging_config(self.profile), placement=placement)
            with self.control():
                staging = self._stack.enter_context(RedisSentinelStaging(config))
            self._redis = ZoneRedis(staging, self)
        return self._redis

    def service(self, zone: str) -> ZoneService:
        """The reference application started inside `zone` (for this scenario), in front of the stores
        this scenario opened: every PostgreSQL node and every zone's Sentinel on their zone addresses."""
        if zone not in self.settings.all_zones():
            raise ConfigError(f"unknown zone {zone!r} (zones: {', '.join(self.settings.all_zones())})")
        if self._postgres is None and self._redis is None:
            raise ConfigError("the reference application needs the stores spread over the zones first")
        conninfo, behind, client = None, [], []
        if self._postgres is not None:
            conninfo = self._postgres.endpoint().conninfo() + f" tcp_user_timeout={APP_TCP_USER_TIMEOUT_MS}"
            behind.append(self._postgres.name)
            client.append(
                f"psycopg_pool over libpq multi-host, tcp_user_timeout={APP_TCP_USER_TIMEOUT_MS} ms"
            )
        sentinels: list[tuple[str, int]] = []
        if self._redis is not None:
            sentinels = self._redis.staging.sentinel_addresses()
            behind.append(self._redis.name)
            client.append(f"redis-py Sentinel client over {len(sentinels)} Sentinels")
        app = ReferenceApp(
            pg_conninfo=conninfo,
            sentinels=sentinels,
            redis_service=self._redis.staging.master_name if self._redis is not None else None,
            placement=self.placement(zone),
        )
        self._stack.enter_context(app)  # stopped before the stagings it is in front of
        return ZoneService(app, self, zone=zone, behind=tuple(behind), client="; ".join(client))

    def resources(self, names: tuple[str, ...]) -> list[ZoneResource]:
        """Fresh stagings for a new scenario, placed as the profile says: a scenario starts with every
        primary in its own zone again, whatever the last one failed over to (the zones stay)."""
        openers: dict[str, Callable[[], ZoneResource]] = {"postgres": self.postgres, "redis": self.redis}
        unknown = [n for n in names if n not in openers]
        if unknown:
            raise ConfigError(f"no local zone resource {unknown[0]!r} (known: {', '.join(openers)})")
        self.close_resources()
        return [openers[n]() for n in names]

    def close_resources(self) -> None:
        """Stop the stagings (the fabric stays). Never raises."""
        with contextlib.suppress(Exception):
            self._stack.close()
        self._stack = contextlib.ExitStack()
        self._postgres = self._redis = None

    def zone_of(self, host: str) -> str:
        return self.fabric.zone_of(host) or "?"

    # ---- ZoneOutage ----------------------------------------------------------------------------------
    def client_factory(self, zone: str, factory: SessionFactory) -> SessionFactory:
        fabric = self.fabric
        fabric.namespace(zone)  # an unknown zone fails here, before any probe starts

        def in_zone() -> ProbeSession:
            fabric.enter_thread(zone)  # the probe's own worker thread, for good
            return factory()

        return in_zone

    def control(self) -> AbstractContextManager[None]:
        return self.fabric.control()

    def check_steady_state(self) -> dict[str, str]:
        if self.fabric.impaired:
            raise SteadyStateNotMet(f"zones still cut off: {', '.join(sorted(self.fabric.impaired))}")
        return {
            "zones": ", ".join(f"{z}={self.fabric.address(z)}" for z in self.fabric.zones),
            "links": "all up, one bridge",
        }

    def lose(self, zone: str) -> str:
        self._known(zone)
        return self.faults.lose(zone).describe()

    def partition(self, zone: str, *, with_zones: tuple[str, ...] = ()) -> str:
        self._known(zone)
        return self.faults.partition(zone, with_zones=with_zones).describe()

    def cut_zones(self) -> frozenset[str]:
        return self.fabric.impaired

    def heal(self) -> str:
        healed = self.faults.heal()
        return "; ".join(f"{w.kind.value} {w.zone} healed: links up, one bridge" for w in healed)

    def layout(self) -> ZoneEvidence:
        return ZoneEvidence(
            mechanism=self.mechanism,
            subnet=str(self.fabric.network),
            zones=list(self.fabric.zones),
            links=[ZoneLinkRecord(**_link(link)) for link in self.fabric.links()],
        )

    def fault_records(self, t0: float) -> list[ZoneFaultRecord]:
        def rel(value: float | None) -> float | None:
            return None if value is None else round(value - t0, 6)

        return [
            ZoneFaultRecord(
                kind=w.kind.value,
                zone=w.zone,
                island=list(w.island),
                links=[ZoneLinkRecord(**_link(link)) for link in w.links],
                issued_s=round(w.issued_at - t0, 6),
                returned_s=round(w.returned_at - t0, 6),
                heal_issued_s=rel(w.heal_issued_at),
                healed_s=rel(w.healed_at),
            )
            for w in self.faults.windows
            if w.issued_at >= t0  # this drill's faults, not an earlier scenario's on the same zones
        ]

    def fis_record(self, t0: float) -> FisRecord | None:
        return None

    def close(self) -> None:
        """Stagings first, then heal, then the fabric. Never raises."""
        self.close_resources()
        self.faults.stop()
        self.fabric.stop()

    def _known(self, zone: str) -> None:
        if zone not in self.settings.zones:
            raise ConfigError(f"unknown zone {zone!r} (zones: {', '.join(self.settings.zones)})")


def _link(link: object) -> dict[str, str]:
    return {k: str(getattr(link, k)) for k in ("zone", "namespace", "veth", "peer", "address")}


@contextlib.contextmanager
def open_local_zones(profile: Profile) -> Iterator[LocalZoneOutage]:
    """The profile's zones as namespaces; every one of them gone when the block is left."""
    settings = profile.zones
    fabric = ZoneFabric(settings.all_zones(), subnet=settings.subnet)
    outage = LocalZoneOutage(fabric, settings, profile)
    try:
        fabric.start()
        yield outage
    finally:
        outage.close()
