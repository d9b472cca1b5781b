"""The zone outage drill: an availability zone is lost (or partitioned from the others) while every
resource spread over the zones takes canary writes from clients in their own zone (and, for split
brain, from clients inside the zone that is cut off); each resource must fail over to another zone.

Order: steady state (zones reachable, every resource steady) -> probes, one per (resource, client zone),
each connecting from its zone -> fault (timed: just before the action, and when it returns) -> the
cut-off nodes fenced -> (a partition heals after its duration) -> promotion per resource (firedrill
promotes PostgreSQL; Sentinel promotes Redis, firedrill waits) -> first acknowledged write of every
probe on a recovered node (deadline) -> read back per probe -> heal -> restore topology -> measure:
RTO and loss per resource (`firedrill.measure_zones`), and the split-brain writes by sequence number.
The drill talks only to `ZoneOutage` and `ZoneResource`: local namespaces or AWS FIS alike.

A service in front of the stores (`add_resource(..., behind=...)`: the reference application in a zone)
is one more resource, probed from the clients' zone like the stores and measured by the same rules; its
row is then set against the rows of the stores behind it (`service_gap`): the service cannot be back
before the slowest of them (a non-blocking check, as for the service probe of `firedrill.drills.service`),
and the gap is named after what the service answered meanwhile.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firedrill.catalogue import BUILTIN_FEATURES, DrillSpec, LocalPlan
from firedrill.drills.base import DrillRun, round6
from firedrill.drills.service import ORDER_CHECK, gap_phase
from firedrill.errors import ConfigError, DeadlineExceeded, HarnessError, TargetError, first_line
from firedrill.evidence import EvidenceRecord, Measurements, Node
from firedrill.evidence_zones import ResourceRecord, ZoneEvidence, ZonePlacementRecord
from firedrill.measure_zones import (
    ResourceProbe,
    ResourceResult,
    ServiceGap,
    combine,
    measure_resources,
    service_gap,
)
from firedrill.targets.base import TargetDescription
from firedrill.targets.zone_base import ClientPlacement, ZoneOutage, ZoneResource
from firedrill.timeline import EventKind

SPEC = DrillSpec(
    name="zone-loss",
    summary="an availability zone lost or cut off: PostgreSQL and Redis fail over to other zones (AWS: FIS)",
    feature=BUILTIN_FEATURES / "zone_loss.feature",
    category="failover",
    stores=("postgres", "redis"),
    steps=("firedrill.steps.zones",),
    local_plan=LocalPlan(
        starts="zones as network namespaces on one bridge (root, iproute2), PostgreSQL primary + standby "
        "and Redis + 3 Sentinels inside them, and the reference application in a zone in front of both",
        faults="cut every link of zone a (lost), or move them to an island bridge (partitioned), then heal",
    ),
    aws_plan="firedrill.targets.aws_fis_template:plan_target",
    local_changes="firedrill.drills.zone_plan:local_changes",
)

SPLIT_BRAIN_EXACT = "split-brain loss accounted exactly, by sequence number"


@dataclass(frozen=True, slots=True)
class ZoneDrillSettings:
    max_lag_s: float = 1.0
    steady_timeout_s: float = 30.0
    baseline_s: float = 1.0
    recovery_timeout_s: float = 120.0
    promote_timeout_s: float = 60.0
    settle_s: float = 1.0
    restore_timeout_s: float = 120.0


class _ZoneRecorder:
    """Folds the drill's zone evidence into the record (the run's `Traffic` hook: its `conclude` adds
    evidence fields before the record is written, judged and rendered)."""

    def __init__(self, drill: ZoneDrill) -> None:
        self.drill = drill

    def start(self, run: DrillRun) -> None:
        return None

    def stop(self, run: DrillRun) -> None:
        return None

    def conclude(self, run: DrillRun, values: dict[str, float | None]) -> dict[str, Any]:
        return {"zones": self.drill.zone_evidence()}


def _seqs(seqs: tuple[int, ...], limit: int = 20) -> str:
    return ", ".join(map(str, seqs[:limit])) + (" ..." if len(seqs) > limit else "")


class ZoneDrill:
    def __init__(
        self,
        run: DrillRun,
        outage: ZoneOutage,
        resources: list[ZoneResource],
        *,
        clients_zone: str,
        no_loss: frozenset[str] = frozenset(),
        settings: ZoneDrillSettings | None = None,
    ) -> None:
        if not resources:
            raise ConfigError("a zone drill needs at least one resource")
        self.run = run
        self.outage = outage
        self.resources = {r.name: r for r in resources}
        self.clients_zone = clients_zone
        self.clients = [ClientPlacement(r.name, clients_zone) for r in resources]
        self._behind: dict[str, tuple[str, ...]] = {}  # a service: the resources it writes to
        self._gaps: dict[str, ServiceGap] = {}
        self.no_loss = no_loss
        self.settings = settings or ZoneDrillSettings()
        self.fault: str | None = None
        self._started = False
        self._recovering = False
        self._recovered: set[str] = set()
        self._present: dict[str, frozenset[int]] = {}
        self._recovered_nodes: dict[str, frozenset[str] | None] = {}
        self._results: list[ResourceResult] = []
        self._read_errors: dict[str, str] = {}
        run.traffic.append(_ZoneRecorder(self))

    # ---- steps --------------------------------------------------------------------------------------
    def add_clients(self, resource: str, zone: str) -> None:
        """Clients of `resource` in `zone` as well (e.g. inside the zone that will be cut off)."""
        if resource not in self.resources:
            raise ConfigError(f"no resource {resource!r} in this drill ({', '.join(self.resources)})")
        if self._started:
            raise ConfigError("clients must be placed before the probes start")
        placement = ClientPlacement(resource, zone)
        if placement not in self.clients:
            self.clients.append(placement)

    def add_resource(self, resource: ZoneResource, *, behind: tuple[str, ...] = ()) -> None:
        """One more resource, probed from the clients' zone; `behind`: the resources of this drill it
        writes to (a service in front of the stores), which it cannot recover before."""
        if self._started:
            raise ConfigError("resources must be added before the probes start")
        if resource.name in self.resources:
            raise ConfigError(f"this drill already has a resource {resource.name!r}")
        unknown = [b for b in behind if b not in self.resources]
        if unknown:
            raise ConfigError(f"{resource.name} is behind {unknown[0]!r}, not a resource of this drill")
        self.resources[resource.name] = resource
        self.clients.append(ClientPlacement(resource.name, self.clients_zone))
        if behind:
            self._behind[resource.name] = behind

    def key(self, client: ClientPlacement) -> str:
        return f"{self.run.run_id}.{client.probe}"

    def establish_steady_state(self) -> None:
        if self._started:
            return
        self._started = True
        s, run = self.settings, self.run
        run.target = self._describe()
        observed = self.outage.check_steady_state()
        run.check("zones reachable, no fault on", True, ", ".join(f"{k}={v}" for k, v in observed.items()))
        for resource in self.resources.values():
            seen = resource.check_steady_state(max_lag_s=s.max_lag_s, timeout_s=s.steady_timeout_s)
            detail = ", ".join(f"{k}={v}" for k, v in seen.items())
            run.check(f"steady state of {resource.name} before the fault", True, detail)
        run.mark(
            EventKind.STEADY_STATE_OK, f"{len(self.resources)} resource(s), {len(self.clients)} probe(s)"
        )
        for client in self.clients:
            resource = self.resources[client.resource]
            resource.prepare_canary(self.key(client))
            factory = resource.session_factory(self.key(client), run.probe_config)
            run.start_probe(client.probe, self.outage.client_factory(client.zone, factory))
        run.mark(
            EventKind.PROBES_STARTED, f"{run.probe_config.rate_hz:g} Hz per probe: " + self._probe_list()
        )
        time.sleep(s.baseline_s)
        samples, _ = run.timeline.snapshot()
        silent = [c.probe for c in self.clients if not any(x.ok and x.probe == c.probe for x in samples)]
        if silent:
            raise TargetError(f"canary writes fail before any fault ({', '.join(silent)}): not healthy")

    def lose(self, zone: str) -> None:
        self._inject(f"zone-lost {zone}", lambda: self.outage.lose(zone))

    def partition(self, zone: str, seconds: float) -> None:
        if not self.outage.partitions:
            raise HarnessError("this environment cannot partition a zone (supported: losing one)")
        if not 0 < seconds <= 600:
            raise ConfigError(f"partition duration {seconds:g} s is outside (0, 600]")
        self._inject(f"zone-partition {zone}", lambda: self.outage.partition(zone, with_zones=()))
        assert self.fault is not None
        issued = self.run.timeline.first(EventKind.FAULT_RETURNED)
        started = issued.mono if issued else time.monotonic()
        time.sleep(max(0.0, started + seconds - time.monotonic()))
        self.run.mark(EventKind.FAULT_CLEARED, self.outage.heal() or "nothing to heal")

    def _inject(self, label: str, action: Callable[[], str]) -> None:
        if self.fault is not None:
            raise HarnessError(f"a fault was already injected in this scenario ({self.fault})")
        self.establish_steady_state()
        for resource in self.resources.values():
            self.run.mark(EventKind.NOTE, f"{resource.name} before the fault: {resource.before_fault()}")
        self.fault = label
        self.run.fault = label.split(" ", 1)[0]
        self.run.mark(EventKind.FAULT_ISSUED, label)
        detail = action()
        self.run.mark(EventKind.FAULT_RETURNED, detail)
        cut = self.outage.cut_zones()
        for resource in self.resources.values():
            self.run.mark(EventKind.NOTE, f"{resource.name}: {resource.fence(cut)}")
            # Fixed now: after the topology is restored the cut-off node is healthy again, yet it
            # must still not count as a recovery.
            self._recovered_nodes[resource.name] = resource.recovered_nodes()

    def recover(self) -> None:
        """Every resource fails over (firedrill promotes where promotion is manual), then the first
        acknowledged write of every probe on a recovered node."""
        if self.fault is None:
            raise HarnessError("no fault was injected, so there is nothing to recover from")
        if not self._recovering:
            self._recovering = True
            for resource in self.resources.values():
                who = "firedrill promotes" if resource.promotion_is_manual() else "waiting for the platform"
                self.run.mark(EventKind.PROMOTION_STARTED, f"{resource.name}: {who}")
                detail = resource.promote(timeout_s=self.settings.promote_timeout_s)
                self.run.mark(EventKind.PROMOTION_DONE, f"{resource.name}: {detail}")
        self.await_recovery()

    def await_recovery(self) -> None:
        deadline = time.monotonic() + self.settings.recovery_timeout_s
        while True:
            samples, events = self.run.timeline.snapshot()
            for row in measure_resources(samples, events, self._probes(present=False)):
                if row.probe not in self._recovered and row.recovered_node is not None:
                    self._recovered.add(row.probe)
                    self.run.mark(
                        EventKind.RECOVERED, f"{row.probe}: first acknowledged write on {row.recovered_node}"
                    )
            waiting = [c.probe for c in self.clients if c.probe not in self._recovered]
            if not waiting:
                break
            if time.monotonic() >= deadline:
                limit = self.settings.recovery_timeout_s
                raise DeadlineExceeded(
                    f"no acknowledged write on a recovered node within {limit:g} s of the fault "
                    f"for {', '.join(waiting)}"
                )
            time.sleep(0.02)
        time.sleep(self.settings.settle_s)

    def verify(self) -> None:
        self.run.stop_probes()
        for client in self.clients:
            try:
                self._present[client.probe] = self.resources[client.resource].read_back(self.key(client))
            except HarnessError as exc:
                self._read_errors[client.probe] = first_line(exc)
        self._measure()
        for row in self._results:
            self._loss_checks(row)
        self._service_checks()
        read = sum(len(p) for p in self._present.values())
        self.run.mark(
            EventKind.VERIFIED, f"{read} canary records read back over {len(self._present)} probe(s)"
        )

    def restore_topology(self) -> None:
        healed = self.outage.heal()
        if healed:
            self.run.mark(EventKind.FAULT_CLEARED, healed)
        done = []
        for resource in self.resources.values():
            done.append(resource.restore_topology(timeout_s=self.settings.restore_timeout_s))
        self.run.check("topology restored", True, "; ".join(done))
        self.run.mark(EventKind.TOPOLOGY_RESTORED, "; ".join(done))

    # ---- the whole drill ----------------------------------------------------------------------------
    def conclude(self) -> EvidenceRecord:
        """Finish what remains, then measure and write evidence; a failure is recorded, not raised."""
        if self.run.evidence is not None:
            return self.run.evidence
        try:
            if self.fault is not None and self.run.error is None:
                if len(self._recovered) < len(self.clients):
                    self.recover()
                if not self._results:
                    self.verify()
        except (HarnessError, KeyboardInterrupt) as exc:
            self.run.record_failure(exc)
            if isinstance(exc, KeyboardInterrupt):
                self._restore_safely()
                self._finish()
                raise
        finally:
            self.run.stop_probes()
        self._restore_safely()
        return self._finish()

    def _restore_safely(self) -> None:
        try:
            healed = self.outage.heal()
            if healed:
                self.run.mark(EventKind.FAULT_CLEARED, healed)
            if self.fault is not None:
                self.restore_topology()
        except HarnessError as exc:
            self.run.check("topology restored", False, first_line(exc))
            self.run.record_failure(exc)

    def _finish(self) -> EvidenceRecord:
        _, events = self.run.timeline.snapshot()
        m = Measurements()
        values: dict[str, float | None] = {"rto": None, "rpo": None, "lost_writes": None}
        if self.fault is not None and any(e.kind is EventKind.FAULT_ISSUED for e in events):
            if not self._results:
                self._measure()
            total = combine(self._results)
            stale = sum(r.stale_acks for r in self._results)
            split = sum(len(r.stale_lost_seqs) for r in self._results)
            m = Measurements(
                rto_s=round6(total.rto_s),
                recovered=all(r.recovered_node is not None for r in self._results),
                outage_seen=any(r.outage_seen for r in self._results),
                outage_s=round6(max((r.outage_s or 0.0 for r in self._results), default=None)),
                failed_writes=sum(r.failed_writes for r in self._results),
                acknowledged_writes=sum(r.acknowledged for r in self._results),
                lost_writes=total.lost_writes,
                rpo_window_s=round6(total.rpo_s),
                extra={
                    "resources": len(self.resources),
                    "probes": len(self.clients),
                    "fault": self.fault,
                    "stale_acks": stale,
                    "split_brain_lost_writes": split,
                },
            )
            values = {
                "rto": total.rto_s,
                "rpo": total.rpo_s,
                "lost_writes": None if total.lost_writes is None else float(total.lost_writes),
            }
        return self.run.finish(m, values)

    # ---- measurement and evidence -------------------------------------------------------------------
    def _probes(self, *, present: bool) -> list[ResourceProbe]:
        out = []
        for client in self.clients:
            name = client.resource
            nodes = self._recovered_nodes.get(name, self.resources[name].recovered_nodes())
            seen = self._present.get(client.probe) if present else None
            out.append(ResourceProbe(name, client.probe, client.zone, nodes, seen))
        return out

    def _measure(self) -> None:
        samples, events = self.run.timeline.snapshot()
        if any(e.kind is EventKind.FAULT_ISSUED for e in events):
            self._results = measure_resources(samples, events, self._probes(present=True))

    def _loss_checks(self, row: ResourceResult) -> None:
        promised = row.resource in self.no_loss or self.run.objectives.max_lost_writes is not None
        if not row.verified:
            why = self._read_errors.get(row.probe, "not read back")
            self.run.check(f"every write acknowledged to {row.probe} is on the recovered store", False, why)
            return
        detail = f"{row.acknowledged - (row.lost or 0)}/{row.acknowledged} present"
        if row.lost:
            detail += f"; lost seq {_seqs(row.lost_seqs)}"
        self.run.check(
            f"every write acknowledged to {row.probe} is on the recovered store",
            row.lost == 0,
            detail,
            blocking=promised,
        )
        if row.stale_acks:
            split = ", ".join(map(str, row.stale_lost_seqs[:20])) + (
                " ..." if len(row.stale_lost_seqs) > 20 else ""
            )
            self.run.check(
                f"no write the cut-off node acknowledged to {row.probe} after the fault is lost",
                not row.stale_lost_seqs,
                f"{row.stale_acks} acknowledged by the cut-off node after the fault; "
                f"{len(row.stale_lost_seqs)} of them missing from the recovered store (split brain)"
                + (f": seq {split}" if split else ""),
                blocking=promised,
            )
        if row.stale_lost_seqs:
            survived = row.stale_acks - len(row.stale_lost_seqs)
            self.run.check(
                SPLIT_BRAIN_EXACT + f" ({row.probe})",
                row.split_brain_exact,
                f"{row.lost} lost, {len(row.stale_lost_seqs)} of them acknowledged by the cut-off node after "
                f"the fault ({survived} such writes reached the replicas before the cut and survived)",
            )

    def _service_checks(self) -> None:
        """Each service's row against the stores behind it, seen from the same client zone."""
        samples, events = self.run.timeline.snapshot()
        period = 1.0 / self.run.probe_config.rate_hz
        for row in self._results:
            behind = self._behind.get(row.resource)
            if not behind:
                continue
            stores = [r for r in self._results if r.resource in behind and r.client_zone == row.client_zone]
            gap = self._gaps[row.probe] = service_gap(samples, events, row, stores)
            if gap.ordered is None:
                continue
            slowest = ", ".join(f"{r.probe} {r.rto_s or 0.0:.3f} s" for r in stores)
            phase = gap_phase(Counter(gap.errors), gap.gap_s, period)
            self.run.check(
                ORDER_CHECK,
                gap.ordered,
                f"service {row.rto_s or 0.0:.3f} s, stores {gap.store_rto_s or 0.0:.3f} s ({slowest}; "
                f"last seen down at {gap.store_floor_s or 0.0:.3f} s): {gap.gap_s or 0.0:+.3f} s"
                + (f", {phase}" if phase else ""),
                blocking=False,
            )

    def zone_evidence(self) -> ZoneEvidence:
        t0 = self.run.started_mono
        layout = self.outage.layout()
        placements = [
            ZonePlacementRecord(server=server, resource=r.name, zone=zone, address=address)
            for r in self.resources.values()
            for server, zone, address in r.placements()
        ] + [
            ZonePlacementRecord(server=f"probe {c.probe}", resource="client", zone=c.zone, address="")
            for c in self.clients
        ]

        def rel(value: float | None) -> float | None:
            return None if value is None else round(value - t0, 6)

        rows = [
            ResourceRecord(
                resource=r.resource,
                probe=r.probe,
                client_zone=r.client_zone,
                status=r.status,
                rto_s=round6(r.rto_s),
                rto_floor_s=round6(r.rto_floor_s),
                outage_seen=r.outage_seen,
                outage_s=round6(r.outage_s),
                first_failure_s=rel(r.first_failure_at),
                recovered_s=rel(r.recovered_at),
                recovered_node=r.recovered_node,
                attempted=r.attempted,
                failed_writes=r.failed_writes,
                acknowledged_writes=r.acknowledged,
                verified=r.verified,
                lost_writes=r.lost,
                lost_seqs=list(r.lost_seqs),
                rpo_window_s=round6(r.window_s),
                stale_acks=r.stale_acks,
                split_brain_lost_seqs=list(r.stale_lost_seqs),
                split_brain_exact=r.split_brain_exact,
                **self._gap_fields(r.probe),
            )
            for r in self._results
        ]
        return layout.model_copy(
            update={
                "placements": placements,
                "faults": self.outage.fault_records(t0),
                "resources": rows,
                "fis": self.outage.fis_record(t0),
            }
        )

    def _gap_fields(self, probe: str) -> dict[str, Any]:
        gap = self._gaps.get(probe)
        if gap is None:
            return {}
        period = 1.0 / self.run.probe_config.rate_hz
        return {
            "behind": list(gap.behind),
            "store_rto_s": round6(gap.store_rto_s),
            "store_floor_s": round6(gap.store_floor_s),
            "gap_s": round6(gap.gap_s),
            "ordered": gap.ordered,
            "gap_phase": gap_phase(Counter(gap.errors), gap.gap_s, period),
        }

    def _describe(self) -> TargetDescription:
        descs = [r.describe() for r in self.resources.values()]
        nodes: list[Node] = [n for d in descs for n in d.nodes]
        settings: dict[str, str] = {"zones.mechanism": self.outage.mechanism}
        for d in descs:
            settings.update(d.settings)
        servers = {k: v for d in descs for k, v in d.servers.items()}
        return TargetDescription(
            kind="+".join(d.kind for d in descs),
            environment_kind=descs[0].environment_kind,
            servers=servers,
            nodes=tuple(nodes),
            settings=settings,
        )

    def _probe_list(self) -> str:
        return ", ".join(c.probe for c in self.clients)
