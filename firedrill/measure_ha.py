"""What an HA manager did around a fault, from the events its watcher recorded: the phases of an
automatic failover, and the checks that hold the figures to ground truth.

Pure functions over `firedrill.timeline` events (no I/O, no clock), like `firedrill.measure`:

- detection: the fault to the leader key seen gone (its lease expired, or it was released);
- election: the key seen gone to the key seen held by a node again;
- promotion: the key seen held to that node reporting itself primary (a node other than the
  pre-fault primary, or the same one on a new timeline);
- reconnect: that report to the first acknowledged write on the recovered endpoint.

A planned switchover has no detection: its first phase is the handover (the request to the old
leader releasing the key). A phase is reported only when both its ends were observed in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from firedrill.evidence import Phase
from firedrill.timeline import Event, EventKind

ROLES_SEP = "; "


@dataclass(frozen=True, slots=True)
class HaPhases:
    fault_at: float
    leader_lost_at: float | None
    elected_at: float | None
    elected: str | None  # the node that took the leader key
    promoted_at: float | None
    promoted: str | None  # detail of the NEW_PRIMARY event, e.g. "pg-2@2"
    recovered_at: float | None
    phases: tuple[Phase, ...]
    problems: tuple[str, ...]  # orderings that cannot happen: the observation is not trustworthy

    @property
    def failover_seen(self) -> bool:
        return self.promoted_at is not None

    def duration(self, name: str) -> float | None:
        return next((p.duration_s for p in self.phases if p.name == name), None)


def _first(events: Sequence[Event], kind: EventKind, not_before: float) -> Event | None:
    return min(
        (e for e in events if e.kind is kind and e.mono >= not_before), key=lambda e: e.mono, default=None
    )


def _phase(name: str, start: float, end: float, fault_at: float) -> Phase:
    return Phase(name=name, start_s=start - fault_at, end_s=end - fault_at, duration_s=end - start)


def _holds_key(events: Sequence[Event], promoted: Event) -> bool:
    """A node that kept the leader key throughout may promote again on a new timeline (Patroni
    demotes a leader that cannot reach the DCS, and promotes it back once it can): no election.
    While the DCS cannot be read the key is unknown, not gone: the holder is the one last read before
    the promotion, and it must still hold the key when the DCS is read again."""
    name = promoted.detail.partition("@")[0]
    readable = [s for s in snapshots(events) if s.dcs_ok]
    before = [s for s in readable if s.mono <= promoted.mono]
    after = [s for s in readable if s.mono > promoted.mono]
    if not before or before[-1].leader != name:
        return False
    return not after or after[0].leader == name


def has_ha_events(events: Sequence[Event]) -> bool:
    return any(e.kind is EventKind.HA_ROLES for e in events)


def measure_ha(events: Sequence[Event], *, recovered_at: float | None, planned: bool = False) -> HaPhases:
    """Phases of the failover the watcher saw after the first FAULT_ISSUED.

    `recovered_at`: the first recovered acknowledgement (monotonic), None when none was seen.
    `planned`: a switchover, whose first phase is the handover rather than a detection.
    Raises ValueError without a FAULT_ISSUED event.
    """
    issued = [e.mono for e in events if e.kind is EventKind.FAULT_ISSUED]
    if not issued:
        raise ValueError("no FAULT_ISSUED event: cannot measure a failover without a fault time")
    fault_at = min(issued)
    lost = _first(events, EventKind.LEADER_LOST, fault_at)
    elected = _first(events, EventKind.LEADER_ELECTED, lost.mono if lost else fault_at)
    promoted = _first(events, EventKind.NEW_PRIMARY, fault_at)
    problems: list[str] = []
    early = _first(events, EventKind.LEADER_ELECTED, fault_at)
    if lost is not None and early is not None and early.mono < lost.mono:
        problems.append(
            f"leader key taken by {early.detail or '?'} at +{early.mono - fault_at:.3f} s, before the old "
            f"key was seen gone at +{lost.mono - fault_at:.3f} s"
        )
    if promoted is not None and lost is not None and promoted.mono < lost.mono:
        problems.append(
            f"new primary {promoted.detail} seen at +{promoted.mono - fault_at:.3f} s, before the leader "
            f"key was seen gone at +{lost.mono - fault_at:.3f} s (promotion before detection)"
        )
    if promoted is not None and elected is not None and promoted.mono < elected.mono:
        problems.append(
            f"new primary {promoted.detail} seen at +{promoted.mono - fault_at:.3f} s, before any node "
            f"held the leader key (+{elected.mono - fault_at:.3f} s)"
        )
    elif promoted is not None and elected is None and not _holds_key(events, promoted):
        problems.append(f"new primary {promoted.detail} seen, but no node was seen taking the leader key")

    phases: list[Phase] = []
    first_name = "handover" if planned else "detection"
    if not problems:
        if lost is not None:
            phases.append(_phase(first_name, fault_at, lost.mono, fault_at))
            if elected is not None:
                phases.append(_phase("election", lost.mono, elected.mono, fault_at))
        elif elected is not None:  # the key changed hands between two polls: one phase, not two
            phases.append(_phase(f"{first_name} + election", fault_at, elected.mono, fault_at))
        if elected is not None and promoted is not None:
            phases.append(_phase("promotion", elected.mono, promoted.mono, fault_at))
        if promoted is not None and recovered_at is not None and recovered_at >= promoted.mono:
            phases.append(_phase("reconnect", promoted.mono, recovered_at, fault_at))
    return HaPhases(
        fault_at=fault_at,
        leader_lost_at=lost.mono if lost else None,
        elected_at=elected.mono if elected else None,
        elected=elected.detail if elected else None,
        promoted_at=promoted.mono if promoted else None,
        promoted=promoted.detail if promoted else None,
        recovered_at=recovered_at,
        phases=tuple(phases),
        problems=tuple(problems),
    )


def detection_bounds(ttl: float, loop_wait: float, margin_s: float) -> tuple[float, float]:
    """Where the leader key must expire after its holder died: it was last renewed at most one
    loop_wait before the kill, with a lease of `ttl`; `margin_s` covers etcd's expiry sweep and
    the watcher's polling."""
    return ttl - loop_wait - margin_s, ttl + loop_wait + margin_s


def check_detection(
    detection_s: float | None, *, ttl: float, loop_wait: float, margin_s: float = 1.0
) -> tuple[bool, str]:
    """Ground truth for an unplanned failover: detection lies within `detection_bounds` of the kill."""
    lo, hi = detection_bounds(ttl, loop_wait, margin_s)
    if detection_s is None:
        return False, f"no leader key expiry was observed (expected {lo:g}-{hi:g} s after the fault)"
    ok = lo <= detection_s <= hi
    return (
        ok,
        f"detection {detection_s:.3f} s; ttl {ttl:g} s, loop_wait {loop_wait:g} s: expected {lo:g}-{hi:g} s",
    )


def check_handover(
    result: HaPhases, returned_at: float | None, *, loop_wait: float, margin_s: float = 1.0
) -> tuple[bool, str]:
    """Ground truth for a switchover, whose issue time is known: the key changes hands after the
    request and no later than one loop after the API said it was done."""
    if result.elected_at is None:
        return False, "the leader key was never seen changing hands"
    after = result.elected_at - result.fault_at
    if after < 0:
        return False, f"leader changed {after:.3f} s before the switchover was requested"
    if returned_at is not None and result.elected_at > returned_at + loop_wait + margin_s:
        late = result.elected_at - returned_at
        return False, f"leader changed {late:.3f} s after the API reported the switchover done"
    return True, f"leader key taken by {result.elected} {after:.3f} s after the request"


def format_roles(leader: str | None, dcs_ok: bool, roles: dict[str, str]) -> str:
    """The HA_ROLES detail: 'leader=pg-1 dcs=ok; pg-1=primary@1; pg-2=replica@1' (leader '-' when the
    key is absent, '?' when it could not be read)."""
    shown = leader if leader is not None else ("-" if dcs_ok else "?")
    head = f"leader={shown} dcs={'ok' if dcs_ok else 'unreachable'}"
    return ROLES_SEP.join([head, *(f"{name}={roles[name]}" for name in sorted(roles))])


@dataclass(frozen=True, slots=True)
class RolesSnapshot:
    mono: float
    leader: str | None  # None: absent or unknown
    dcs_ok: bool
    roles: dict[str, tuple[str, int | None]]  # name -> (role, timeline)

    def primaries(self) -> list[str]:
        return sorted(n for n, (role, _) in self.roles.items() if role == "primary")


def parse_roles(event: Event) -> RolesSnapshot:
    parts = event.detail.split(ROLES_SEP)
    head = dict(item.split("=", 1) for item in parts[0].split() if "=" in item)
    leader = head.get("leader")
    roles: dict[str, tuple[str, int | None]] = {}
    for part in parts[1:]:
        name, _, value = part.partition("=")
        role, _, tl = value.partition("@")
        roles[name] = (role, int(tl) if tl.isdigit() else None)
    return RolesSnapshot(
        mono=event.mono,
        leader=None if leader in (None, "-", "?") else leader,
        dcs_ok=head.get("dcs") == "ok",
        roles=roles,
    )


def snapshots(events: Sequence[Event]) -> list[RolesSnapshot]:
    return [parse_roles(e) for e in sorted(events, key=lambda e: e.mono) if e.kind is EventKind.HA_ROLES]


def check_no_promotion(events: Sequence[Event], start: float, end: float) -> tuple[bool, str]:
    """Between `start` and `end` (e.g. while the DCS had no quorum) no node may be promoted: no new
    primary reported, no leader key taken by another node, no node on a new timeline, never two
    primaries at once. Judged against the last role snapshot before `start`."""
    snaps = snapshots(events)
    before = [s for s in snaps if s.mono <= start]
    if not before:
        return False, "no role snapshot before the window: nothing to compare with"
    base = before[-1]
    base_primary = base.primaries()
    base_tl = {n: tl for n, (_, tl) in base.roles.items()}
    problems: list[str] = []
    for e in events:
        if start <= e.mono <= end and e.kind is EventKind.NEW_PRIMARY:
            problems.append(f"new primary {e.detail} at +{e.mono - start:.3f} s")
        if (
            start <= e.mono <= end
            and e.kind is EventKind.LEADER_ELECTED
            and e.detail not in (base.leader, None)
        ):
            problems.append(f"leader key taken by {e.detail} at +{e.mono - start:.3f} s")
    during = [s for s in snaps if start <= s.mono <= end]
    for s in during:
        if len(s.primaries()) > 1:
            problems.append(f"two primaries at +{s.mono - start:.3f} s: {', '.join(s.primaries())}")
        for name in s.primaries():
            if name not in base_primary:
                problems.append(f"{name} primary at +{s.mono - start:.3f} s")
        for name, (_, tl) in s.roles.items():
            if tl is not None and base_tl.get(name) is not None and tl != base_tl[name]:
                problems.append(f"{name} on timeline {tl} (was {base_tl[name]}) at +{s.mono - start:.3f} s")
    if problems:
        return False, "; ".join(dict.fromkeys(problems))
    tls = sorted({tl for _, tl in base_tl.items() if tl is not None})
    return True, (
        f"{len(during)} role snapshots in {end - start:.1f} s: leader stayed {base.leader or '-'}, "
        f"timeline {', '.join(map(str, tls)) or '?'} unchanged, no other primary"
    )


def max_primaries(events: Sequence[Event], start: float, end: float | None = None) -> tuple[int, str]:
    """The most nodes that reported running as primary at once from `start` on (the snapshot in
    force at `start` included), and when."""
    snaps = snapshots(events)
    before = [s for s in snaps if s.mono <= start]
    window = [*before[-1:], *(s for s in snaps if s.mono > start and (end is None or s.mono <= end))]
    worst, when = 0, ""
    for s in window:
        if len(s.primaries()) > worst:
            at = max(s.mono, start) - start
            worst, when = len(s.primaries()), f"+{at:.3f} s: {', '.join(s.primaries())}"
    return worst, when
