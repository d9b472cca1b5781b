"""Turn a drill's recorded samples and events into figures: RTO, outage, phases, loss, PITR, verdicts.

Pure functions over `firedrill.timeline` data (no I/O, no clock, no threads), so every figure in an
evidence record can be recomputed from the recorded timeline alone. Samples may come unsorted and
from several probes; only WRITE samples count towards RTO, outage and loss.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from firedrill.evidence import Objective, ObjectiveVerdict, Phase, ProbeStats
from firedrill.timeline import Event, EventKind, Op, Sample


@dataclass(frozen=True, slots=True)
class OutageResult:
    """What the clients saw around the fault. Times ending in `_at` are monotonic seconds."""

    fault_at: float
    recovered: bool
    rto_s: float | None  # first recovered write end - fault_at
    outage_seen: bool
    outage_s: float | None  # None if never recovered; 0.0 if recovered and no outage was seen
    first_failure_at: float | None
    first_recovered_at: float | None
    recovered_node: str | None
    failed_writes: int
    stale_acks: int
    max_gap_s: float
    phases: tuple[Phase, ...]


@dataclass(frozen=True, slots=True)
class LossResult:
    """Acknowledged writes versus what the recovered store holds. Counts are distinct seqs."""

    acknowledged: int
    surviving: int
    lost: int
    lost_seqs: tuple[int, ...]
    window_s: float
    unacknowledged_present: int


@dataclass(frozen=True, slots=True)
class PitrCheck:
    """Did a point-in-time restore hold exactly the canary rows committed up to the target?"""

    target_wall: float
    expected: int
    present_expected: int
    missing: tuple[int, ...]
    unexpected: tuple[int, ...]
    newest_recovered_wall: float | None
    ok: bool


def _writes(samples: Sequence[Sample]) -> list[Sample]:
    return sorted((s for s in samples if s.op == Op.WRITE), key=lambda s: (s.start, s.end, s.seq))


def _first_event(events: Sequence[Event], kind: EventKind, not_before: float) -> Event | None:
    return min(
        (e for e in events if e.kind == kind and e.mono >= not_before), key=lambda e: e.mono, default=None
    )


def _phase(name: str, start: float, end: float, fault_at: float) -> Phase:
    return Phase(name=name, start_s=start - fault_at, end_s=end - fault_at, duration_s=end - start)


def _max_gap(ack_ends: list[float], fault_at: float, window_end: float) -> float:
    """Largest silence between acknowledgements from the last ack before the fault to `window_end`.

    With no ack before the fault the silence is counted from the fault itself.
    """
    before = [e for e in ack_ends if e < fault_at]
    points = [before[-1] if before else fault_at]
    points += [e for e in ack_ends if fault_at <= e <= window_end]
    points.append(window_end)
    return max(b - a for a, b in pairwise(points))


def _first_gap_end(ack_ends: list[float], fault_at: float, threshold: float) -> float | None:
    """End of the first ack that closes a silence longer than `threshold` reaching past the fault."""
    prior = [e for e in ack_ends if e < fault_at]
    previous = prior[-1] if prior else fault_at
    for end in (e for e in ack_ends if e >= fault_at):
        if end - previous > threshold:
            return end
        previous = end
    return None


def measure_outage(
    samples: Sequence[Sample],
    events: Sequence[Event],
    *,
    recovered_nodes: frozenset[str] | None,
    gap_threshold_s: float = 0.25,
) -> OutageResult:
    """Measure RTO, the client-visible outage and its phases around the first FAULT_ISSUED event.

    - Recovery is the earliest *acknowledgement* (smallest end) among ok writes that started at or
      after the fault on a node of `recovered_nodes` (None: any node), and after the outage began: at
      or after the start of the first failed write, or, when nothing failed, the ack that closes the
      first silence longer than `gap_threshold_s`. Acks between the fault being issued and taking
      effect are not a recovery. For one sequential probe this is
      the first such write; with several probes it is when the service was first seen writable.
      A write that started before the fault (straddling it) is never a recovery.
    - `stale_acks`: ok writes started at or after the fault on a node known to be outside
      `recovered_nodes` (split-brain evidence). A write without a node is neither recovery nor stale.
    - `failed_writes`: failed writes that ended at or after the fault (a straddling write that fails is
      part of the outage).
    - Outage seen: any such failure, or `max_gap_s` > `gap_threshold_s`, where `max_gap_s` is the longest
      silence between acknowledged writes (any node) from the last ack before the fault up to recovery
      (or up to the last write seen, if never recovered).
    - `outage_s` runs from the end of the last ack before the first failure (or before the fault when
      the outage showed only as a gap; the fault time when there was no ack before) to recovery: the
      outage as the client saw it, so it may start slightly before the fault. 0.0 when no outage was
      seen, None when never recovered.
    - Phases (seconds from the fault) are reported only when observed: detection (fault to the first
      failure, if it came before recovery), promotion (PROMOTION_STARTED to PROMOTION_DONE), reconnect
      (PROMOTION_DONE, else FAULT_CLEARED, to recovery; skipped if recovery was seen before it).
    """
    issued = [e.mono for e in events if e.kind == EventKind.FAULT_ISSUED]
    if not issued:
        raise ValueError("no FAULT_ISSUED event: cannot measure an outage without a fault time")
    fault_at = min(issued)
    writes = _writes(samples)
    after = [w for w in writes if w.start >= fault_at and w.ok]
    stale = 0
    if recovered_nodes is not None:
        stale = sum(1 for w in after if w.node is not None and w.node not in recovered_nodes)
    failures = [w for w in writes if not w.ok and w.end >= fault_at]
    first_fail = min(failures, key=lambda w: (w.end, w.start), default=None)
    # A fault takes effect a little after it is issued; acks in between (same node, or "any node"
    # behind an endpoint) are not a recovery. Recovery is the first ack after the outage began: after
    # the first failed write started, or, with no failure, after the first silence over the threshold.
    not_before = fault_at
    if first_fail is not None:
        not_before = max(fault_at, first_fail.start)
    else:
        gap_end = _first_gap_end(sorted(w.end for w in writes if w.ok), fault_at, gap_threshold_s)
        if gap_end is not None:
            not_before = gap_end
    recovering = [
        w
        for w in after
        if (recovered_nodes is None or w.node in recovered_nodes)
        and (w.start >= not_before or (first_fail is None and w.end >= not_before))
    ]
    first_rec = min(recovering, key=lambda w: (w.end, w.start), default=None)

    rec_at = first_rec.end if first_rec is not None else None
    ack_ends = sorted(w.end for w in writes if w.ok)
    window_end = rec_at if rec_at is not None else max([fault_at, *(w.end for w in writes)])
    max_gap = _max_gap(ack_ends, fault_at, window_end)
    outage_seen = bool(failures) or max_gap > gap_threshold_s

    outage_s: float | None = None
    if rec_at is not None:
        outage_s = 0.0
        if outage_seen:
            ref = first_fail.end if first_fail is not None else fault_at
            prior = [e for e in ack_ends if e < ref]
            outage_s = rec_at - (prior[-1] if prior else fault_at)

    phases: list[Phase] = []
    if first_fail is not None and (rec_at is None or first_fail.end <= rec_at):
        phases.append(_phase("detection", fault_at, first_fail.end, fault_at))
    p_start = _first_event(events, EventKind.PROMOTION_STARTED, fault_at)
    p_done = _first_event(events, EventKind.PROMOTION_DONE, fault_at)
    if p_start and p_done and p_done.mono >= p_start.mono:
        phases.append(_phase("promotion", p_start.mono, p_done.mono, fault_at))
    back = p_done or _first_event(events, EventKind.FAULT_CLEARED, fault_at)
    if back and rec_at is not None and rec_at >= back.mono:
        phases.append(_phase("reconnect", back.mono, rec_at, fault_at))

    return OutageResult(
        fault_at=fault_at,
        recovered=first_rec is not None,
        rto_s=None if rec_at is None else rec_at - fault_at,
        outage_seen=outage_seen,
        outage_s=outage_s,
        first_failure_at=first_fail.end if first_fail is not None else None,
        first_recovered_at=rec_at,
        recovered_node=first_rec.node if first_rec is not None else None,
        failed_writes=len(failures),
        stale_acks=stale,
        max_gap_s=max_gap,
        phases=tuple(phases),
    )


def measure_loss(samples: Sequence[Sample], present: frozenset[int]) -> LossResult:
    """Compare acknowledged writes with the seqs read back from the recovered store.

    A seq counts once: it is acknowledged if any of its samples is ok, at its earliest ack. Seqs in
    `present` that no write sample mentions are ignored. `window_s` (the RPO as data lost) runs from
    the last surviving ack before the last lost ack to that lost ack; if nothing survived before it,
    from the start of the earliest lost write, so losing everything still yields a window. 0.0 when
    nothing was lost. `unacknowledged_present`: seqs that only failed client-side (outcome unknown)
    yet are present, i.e. committed without the client knowing.
    """
    writes = _writes(samples)
    acked: dict[int, Sample] = {}
    for w in sorted((w for w in writes if w.ok), key=lambda w: w.end):
        acked.setdefault(w.seq, w)
    unknown = {w.seq for w in writes if not w.ok} - acked.keys()
    lost = sorted(seq for seq in acked if seq not in present)

    window = 0.0
    if lost:
        last_lost = max((acked[seq] for seq in lost), key=lambda w: w.end)
        survived = [w.end for seq, w in acked.items() if seq in present and w.end < last_lost.end]
        since = max(survived) if survived else min(acked[seq].start for seq in lost)
        window = last_lost.end - since

    return LossResult(
        acknowledged=len(acked),
        surviving=len(acked) - len(lost),
        lost=len(lost),
        lost_seqs=tuple(lost),
        window_s=window,
        unacknowledged_present=len(unknown & present),
    )


def check_pitr(
    commits: Sequence[tuple[int, float]],
    present: frozenset[int],
    target_wall: float,
    *,
    inclusive: bool = True,
) -> PitrCheck:
    """Check a restore to `target_wall` against canary rows (seq, commit wall time) from the source.

    Expected rows are those committed at (if `inclusive`) or before the target; anything committed
    after it must be absent. A seq listed twice keeps its earliest commit time. `ok` means nothing
    missing and nothing unexpected; it is vacuously true when no row was expected, which the caller
    should treat as an unproven restore.
    """
    when: dict[int, float] = {}
    for seq, wall in commits:
        when[seq] = min(wall, when.get(seq, wall))
    expected = {s for s, w in when.items() if (w <= target_wall if inclusive else w < target_wall)}
    missing = tuple(sorted(expected - present))
    unexpected = tuple(sorted((when.keys() - expected) & present))
    recovered_walls = [w for s, w in when.items() if s in present]
    return PitrCheck(
        target_wall=target_wall,
        expected=len(expected),
        present_expected=len(expected & present),
        missing=missing,
        unexpected=unexpected,
        newest_recovered_wall=max(recovered_walls, default=None),
        ok=not missing and not unexpected,
    )


def judge(objectives: Sequence[Objective], values: Mapping[str, float | None]) -> list[ObjectiveVerdict]:
    """An objective is met only by a measured value at or under its limit; unmeasured is not met."""
    verdicts = []
    for obj in objectives:
        value = values.get(obj.name)
        measured = None if value is None or math.isnan(value) else value
        verdicts.append(
            ObjectiveVerdict(
                objective=obj.name,
                limit=obj.limit,
                unit=obj.unit,
                measured=measured,
                met=measured is not None and measured <= obj.limit,
                note="" if measured is not None else "not measured",
            )
        )
    return verdicts


def probe_stats(
    samples: Sequence[Sample], *, target_hz: float, op_timeout_s: float, connect_timeout_s: float
) -> ProbeStats:
    """Show whether the probes ran at the intended rate and where they failed or were served.

    `achieved_hz` is the mean over probes of samples / (last end - first start); probes with a zero
    span are left out. Errors without a class and acks without a node count as "unknown".
    """
    by_probe: defaultdict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_probe[s.probe].append(s)
    rates = []
    for group in by_probe.values():
        span = max(s.end for s in group) - min(s.start for s in group)
        if span > 0:
            rates.append(len(group) / span)
    ok = [s for s in samples if s.ok]
    failed = [s for s in samples if not s.ok]
    return ProbeStats(
        target_hz=target_hz,
        achieved_hz=sum(rates) / len(rates) if rates else 0.0,
        samples=len(samples),
        ok=len(ok),
        failed=len(failed),
        errors=dict(Counter(s.error or "unknown" for s in failed)),
        nodes=dict(Counter(s.node or "unknown" for s in ok)),
        op_timeout_s=op_timeout_s,
        connect_timeout_s=connect_timeout_s,
    )
