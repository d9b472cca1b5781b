"""The failover drill's part for targets whose HA manager (Patroni) fails over on its own: watch it
while the drill runs, then measure its phases and hold them to ground truth.

Driven by capabilities, never by environment kind: a target that `WatchesHaManager` records HA events
on the drill's timeline; a timeline holding them gets the HA manager's phases (detection, election,
promotion, reconnect) instead of the client-only ones, and the checks below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firedrill.drills.base import DrillRun, round6
from firedrill.evidence import Phase
from firedrill.measure import OutageResult
from firedrill.measure_ha import check_detection, check_handover, has_ha_events, max_primaries, measure_ha
from firedrill.targets.base import FailoverTarget, FaultKind, FaultSpec
from firedrill.targets.ha import LOOP_WAIT_KEY, TTL_KEY, WatchesHaManager
from firedrill.timeline import EventKind

# Faults after which the HA manager must fail over on its own (the primary is gone or hung past ttl).
UNPLANNED = frozenset({FaultKind.KILL, FaultKind.FREEZE})
DETECTION_MARGIN_S = 1.0  # etcd's lease expiry sweep (500 ms) and the watcher's polling


def start_watch(target: FailoverTarget, run: DrillRun) -> None:
    if isinstance(target, WatchesHaManager):
        target.start_watch(run.timeline)
        run.mark(EventKind.NOTE, "watching the HA manager (leader key, roles, timelines)")


def stop_watch(target: FailoverTarget) -> None:
    if isinstance(target, WatchesHaManager):
        target.stop_watch()


@dataclass
class HaReview:
    phases: list[Phase] = field(default_factory=list)
    extra: dict[str, float | int | str | bool | None] = field(default_factory=dict)


def _timer(run: DrillRun, key: str) -> float | None:
    try:
        return float(run.target.settings[key]) if run.target is not None else None
    except (KeyError, ValueError):
        return None


def review(run: DrillRun, outage: OutageResult, fault: FaultSpec) -> HaReview | None:
    """The HA manager's phases and checks, recorded on `run`; None when no HA event was recorded."""
    _, events = run.timeline.snapshot()
    if not has_ha_events(events):
        return None
    planned = fault.kind is FaultKind.SWITCHOVER
    result = measure_ha(events, recovered_at=outage.first_recovered_at, planned=planned)
    ttl, loop_wait = _timer(run, TTL_KEY), _timer(run, LOOP_WAIT_KEY)
    for problem in result.problems:
        run.check("HA events in a possible order", False, problem)
    if fault.kind is FaultKind.KILL or (
        fault.kind is FaultKind.FREEZE and ttl is not None and fault.duration_s >= ttl
    ):
        run.check(
            "the HA manager promoted a replica on its own",
            result.failover_seen,
            f"new primary {result.promoted}" if result.promoted else "no new primary was seen",
        )
        if ttl is not None and loop_wait is not None:
            ok, detail = check_detection(
                result.duration("detection"), ttl=ttl, loop_wait=loop_wait, margin_s=DETECTION_MARGIN_S
            )
            run.check("detection matches the configured leader TTL (ground truth)", ok, detail)
    if planned and loop_wait is not None:
        returned = next((e.mono for e in events if e.kind is EventKind.FAULT_RETURNED), None)
        ok, detail = check_handover(result, returned, loop_wait=loop_wait, margin_s=DETECTION_MARGIN_S)
        run.check(
            "the leader changed between the switchover request and its answer (ground truth)", ok, detail
        )
    worst, when = max_primaries(events, result.fault_at)
    run.check(
        "at most one node reports running as primary at a time",
        worst <= 1,
        f"{worst} at {when}" if worst > 1 else f"at most {worst}",
        blocking=False,  # a thawed old primary may say so for a moment; stale acks judge split brain
    )
    extra: dict[str, float | int | str | bool | None] = {
        "ha_failover_seen": result.failover_seen,
        "ha_new_leader": result.elected,
        "ha_new_primary": result.promoted,
        "ha_ttl_s": ttl,
        "ha_loop_wait_s": loop_wait,
    }
    for phase in result.phases:
        extra[f"ha_{phase.name.replace(' + ', '_').replace(' ', '_')}_s"] = round6(phase.duration_s)
    if result.phases:
        run.mark(
            EventKind.NOTE,
            "HA phases: " + ", ".join(f"{p.name} {p.duration_s:.3f} s" for p in result.phases),
        )
    return HaReview(phases=list(result.phases), extra=extra)
