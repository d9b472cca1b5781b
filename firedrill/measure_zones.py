"""RTO and loss per resource of a multi-resource drill (a zone outage), from one shared timeline.

Pure functions over `firedrill.timeline` data, like `firedrill.measure`, whose rules they apply to each
resource's own probe: RTO is the first acknowledged write on a recovered node after the fault; "no
outage seen" is a result; lost writes are the acknowledged sequence numbers the recovered store does
not hold, read back. One row per probe: a resource written to from two zones (the clients' own zone,
and the zone that was cut off) has one row for each, because they see different outages.

Split brain: writes a node outside `recovered_nodes` (the cut-off master) acknowledged after the fault
are *stale*; those of them missing from the recovered store are the split-brain loss, by sequence
number. `split_brain_exact` says the loss is exactly those writes, and no other write was lost.

A service in front of stores (the reference application) is one more row, measured by the same rules
(any node behind it counts as recovered). `service_gap` sets it against the rows of the stores it
writes to: it cannot be back before the slowest of them, and what it answered in between names the
application's own part of the outage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from firedrill.measure import measure_loss, measure_outage
from firedrill.timeline import Event, EventKind, Op, Sample

Status = Literal["no outage", "recovered", "not recovered", "not measured"]


@dataclass(frozen=True, slots=True)
class ResourceProbe:
    """What one row is measured from."""

    resource: str  # "postgres", "redis", "service"
    probe: str  # the probe's name in the timeline
    client_zone: str  # where the probe's connections came from
    recovered_nodes: frozenset[str] | None  # acks that count as recovery; None: any node
    present: frozenset[int] | None  # seqs read back from the recovered store; None: not read back


@dataclass(frozen=True, slots=True)
class ResourceResult:
    resource: str
    probe: str
    client_zone: str
    status: Status
    rto_s: float | None  # fault to the first acknowledged write on a recovered node
    # Fault to the start of the last failed write before that ack: this client's store was still
    # down then, so it came back between the two (the RTO's resolution); rto_s when nothing failed.
    rto_floor_s: float | None
    outage_seen: bool
    outage_s: float | None  # as the client saw it; 0.0 with no outage; None if never recovered
    first_failure_at: float | None  # monotonic
    recovered_at: float | None  # monotonic
    recovered_node: str | None
    attempted: int
    failed_writes: int
    acknowledged: int
    verified: bool  # read back from the recovered store
    lost: int | None  # None: not read back (not measured, never zero)
    lost_seqs: tuple[int, ...]
    window_s: float | None  # the RPO window of the lost writes
    stale_acks: int  # acknowledged after the fault by a node outside recovered_nodes
    stale_lost_seqs: tuple[int, ...]  # of those, the ones the recovered store lacks (split brain)

    @property
    def split_brain_exact(self) -> bool:
        """Read back, the loss is exactly the split-brain writes: every lost seq was acknowledged by the
        cut-off node after the fault (a stale write that straddled the cut and reached the replicas
        survives, and is not counted)."""
        return self.verified and self.stale_lost_seqs == self.lost_seqs


@dataclass(frozen=True, slots=True)
class Combined:
    """The drill's own figures from its rows: the worst RTO, all losses, the widest window. None as
    soon as one row is not measured: a missing figure never reads as a good one."""

    rto_s: float | None
    lost_writes: int | None
    rpo_s: float | None


def fault_time(events: Sequence[Event]) -> float:
    issued = [e.mono for e in events if e.kind is EventKind.FAULT_ISSUED]
    if not issued:
        raise ValueError("no FAULT_ISSUED event: cannot measure an outage without a fault time")
    return min(issued)


def measure_resources(
    samples: Sequence[Sample], events: Sequence[Event], probes: Sequence[ResourceProbe]
) -> list[ResourceResult]:
    """One `ResourceResult` per probe, in the order given."""
    fault_at = fault_time(events)
    by_probe: dict[str, list[Sample]] = {}
    for s in samples:
        if s.op is Op.WRITE:
            by_probe.setdefault(s.probe, []).append(s)
    return [_measure_one(p, by_probe.get(p.probe, []), events, fault_at) for p in probes]


def _measure_one(
    probe: ResourceProbe, samples: list[Sample], events: Sequence[Event], fault_at: float
) -> ResourceResult:
    acked = {s.seq for s in samples if s.ok}
    if not samples:
        return ResourceResult(
            probe.resource,
            probe.probe,
            probe.client_zone,
            "not measured",
            None,
            None,
            False,
            None,
            None,
            None,
            None,
            0,
            0,
            0,
            False,
            None,
            (),
            None,
            0,
            (),
        )
    outage = measure_outage(samples, events, recovered_nodes=probe.recovered_nodes)
    status: Status = "not recovered"
    if outage.recovered:
        status = "recovered" if outage.outage_seen else "no outage"
    floor = outage.rto_s
    if outage.first_recovered_at is not None:
        recovered_at = outage.first_recovered_at
        down = [s.start for s in samples if not s.ok and s.start >= fault_at and s.end <= recovered_at]
        floor = max(down) - fault_at if down else outage.rto_s
    stale = sorted(
        {
            s.seq
            for s in samples
            if s.ok and s.start >= fault_at and probe.recovered_nodes is not None
            if s.node is not None and s.node not in probe.recovered_nodes
        }
    )
    lost: int | None = None
    lost_seqs: tuple[int, ...] = ()
    window: float | None = None
    stale_lost: tuple[int, ...] = ()
    if probe.present is not None:
        loss = measure_loss(samples, probe.present)
        lost, lost_seqs, window = loss.lost, loss.lost_seqs, loss.window_s
        stale_lost = tuple(seq for seq in stale if seq not in probe.present)
    return ResourceResult(
        resource=probe.resource,
        probe=probe.probe,
        client_zone=probe.client_zone,
        status=status,
        rto_s=outage.rto_s,
        rto_floor_s=floor,
        outage_seen=outage.outage_seen,
        outage_s=outage.outage_s,
        first_failure_at=outage.first_failure_at,
        recovered_at=outage.first_recovered_at,
        recovered_node=outage.recovered_node,
        attempted=len({s.seq for s in samples}),
        failed_writes=outage.failed_writes,
        acknowledged=len(acked),
        verified=probe.present is not None,
        lost=lost,
        lost_seqs=lost_seqs,
        window_s=window,
        stale_acks=len(stale),
        stale_lost_seqs=stale_lost,
    )


def combine(results: Sequence[ResourceResult]) -> Combined:
    if not results:
        return Combined(None, None, None)
    rtos = [r.rto_s for r in results]
    losses = [r.lost for r in results]
    windows = [r.window_s for r in results]
    return Combined(
        rto_s=None if any(v is None for v in rtos) else max(v for v in rtos if v is not None),
        lost_writes=None if any(v is None for v in losses) else sum(v for v in losses if v is not None),
        rpo_s=None if any(v is None for v in windows) else max(v for v in windows if v is not None),
    )


@dataclass(frozen=True, slots=True)
class ServiceGap:
    """A service's row against the rows of the stores behind it."""

    probe: str  # the service's probe
    behind: tuple[str, ...]  # the stores' probes it is compared with
    service_rto_s: float | None
    store_rto_s: float | None  # the slowest of their RTOs; None when one of them was not measured
    # The latest moment (from the fault) a store's probe still failed: each store's own probe sees
    # it back between its floor and its RTO, so the service's client may have found it back earlier.
    store_floor_s: float | None
    gap_s: float | None  # the service's RTO minus store_rto_s: its own part of the outage
    errors: dict[str, int]  # what the service answered from the stores' recovery to its own

    @property
    def ordered(self) -> bool | None:
        """The service came back no earlier than its stores were last seen down (None: not
        measurable). A service acknowledging writes while a store's own probe still fails is
        writing somewhere that probe cannot: a finding, not a faster recovery."""
        if self.service_rto_s is None or self.store_floor_s is None:
            return None
        return self.service_rto_s >= self.store_floor_s


def service_gap(
    samples: Sequence[Sample],
    events: Sequence[Event],
    service: ResourceResult,
    stores: Sequence[ResourceResult],
) -> ServiceGap:
    """`service`'s row against `stores` (the rows of the stores it writes to, from its clients' zone)."""
    fault_at = fault_time(events)
    rtos = [r.rto_s for r in stores]
    store_rto = None if not rtos or any(v is None for v in rtos) else max(v for v in rtos if v is not None)
    floors = [r.rto_floor_s for r in stores if r.rto_floor_s is not None]
    floor = None if store_rto is None or len(floors) < len(stores) else max(floors)
    gap = None if service.rto_s is None or store_rto is None else service.rto_s - store_rto
    errors: Counter[str] = Counter()
    if store_rto is not None and service.recovered_at is not None:
        back = fault_at + store_rto
        errors.update(
            s.error or "unknown"
            for s in samples
            if s.probe == service.probe
            and s.op is Op.WRITE
            and not s.ok
            and back <= s.end <= service.recovered_at
        )
    return ServiceGap(
        service.probe, tuple(r.probe for r in stores), service.rto_s, store_rto, floor, gap, dict(errors)
    )
