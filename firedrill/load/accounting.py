"""The background load's accounting: exact loss over every acknowledged write, the outage as the load
saw it, and throughput and latency per window and per phase. Pure functions over compact arrays (no
I/O, no clock, no threads), so every figure can be recomputed from the samples and is tested on
synthetic ones.

A sample is one operation: its sequence number (a write's own, or the one a read asked for), its
start and end on the monotonic clock, and flags (acknowledged, read). The load generator keeps them in
`array` columns, 8+8+8+1 bytes an operation, and hands them over as one `LoadSamples`.

Rules (the same as the canary's, `firedrill.measure`):
- A write is acknowledged when the store confirmed it; a seq counts once, at its earliest ack.
- Lost: acknowledged, yet not in the recovered store. The RPO window runs from the last surviving ack
  before the last lost ack to that lost ack (from the earliest lost write's start if none survived).
- Unacknowledged but present: a write that failed for the client (timeout, broken connection) whose
  row is in the store all the same.
- Phases: before (load start to the fault), during (fault to recovery), after (recovery to stop).
  `achieved_per_s` is the rate issued while the service was up (before, else before + after), and a
  load that issued less than `REACHED_SHARE` of its requested rate did not reach it.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from firedrill.evidence_load import LoadPhase, LoadStats, LoadWindow, PhaseName

FLAG_OK = 1
FLAG_READ = 2
REACHED_SHARE = 0.95
MAX_WINDOWS = 60
_WIDTHS = (0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)


@dataclass
class LoadSamples:
    """Parallel columns, one entry an operation, in the order they were recorded."""

    seq: array[int] = field(default_factory=lambda: array("q"))
    start: array[float] = field(default_factory=lambda: array("d"))
    end: array[float] = field(default_factory=lambda: array("d"))
    flags: array[int] = field(default_factory=lambda: array("B"))
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, seq: int, start: float, end: float, *, ok: bool, read: bool = False) -> None:
        self.seq.append(seq)
        self.start.append(start)
        self.end.append(end)
        self.flags.append((FLAG_OK if ok else 0) | (FLAG_READ if read else 0))

    def __len__(self) -> int:
        return len(self.seq)

    def ok(self, i: int) -> bool:
        return bool(self.flags[i] & FLAG_OK)

    def is_read(self, i: int) -> bool:
        return bool(self.flags[i] & FLAG_READ)


def merge(parts: Iterable[LoadSamples]) -> LoadSamples:
    """One column set from the writers' own (each writer records without a lock)."""
    out = LoadSamples()
    for part in parts:
        # A writer still running may have appended some columns of its latest operation only.
        n = min(len(part.seq), len(part.start), len(part.end), len(part.flags))
        out.seq.extend(part.seq[:n])
        out.start.extend(part.start[:n])
        out.end.extend(part.end[:n])
        out.flags.extend(part.flags[:n])
        out.errors.update(part.errors)
    return out


def percentile(ordered: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of already sorted values (a value that occurred); None for none."""
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# ---- loss -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoadLoss:
    acknowledged: int
    surviving: int
    lost: int
    lost_seqs: tuple[int, ...]
    lost_from: float | None  # earliest ack of a lost write (monotonic)
    lost_to: float | None  # latest ack of a lost write
    window_s: float
    unacknowledged_present: int


def acknowledged_writes(samples: LoadSamples) -> dict[int, int]:
    """seq -> index of its earliest acknowledgement, over every acknowledged write."""
    acked: dict[int, int] = {}
    for i in range(len(samples)):
        if samples.flags[i] == FLAG_OK:  # acknowledged, not a read
            seq = samples.seq[i]
            j = acked.get(seq)
            if j is None or samples.end[i] < samples.end[j]:
                acked[seq] = i
    return acked


def load_loss(samples: LoadSamples, present: frozenset[int]) -> LoadLoss:
    """Every acknowledged load write against the seqs read back from the recovered store."""
    acked = acknowledged_writes(samples)
    failed = {samples.seq[i] for i in range(len(samples)) if samples.flags[i] == 0}
    unknown = failed - acked.keys()
    lost = sorted(seq for seq in acked if seq not in present)
    window = 0.0
    lost_from = lost_to = None
    if lost:
        ends = [samples.end[acked[s]] for s in lost]
        lost_from, lost_to = min(ends), max(ends)
        survived = [samples.end[i] for s, i in acked.items() if s in present and samples.end[i] < lost_to]
        since = max(survived) if survived else min(samples.start[acked[s]] for s in lost)
        window = lost_to - since
    return LoadLoss(
        acknowledged=len(acked),
        surviving=len(acked) - len(lost),
        lost=len(lost),
        lost_seqs=tuple(lost),
        lost_from=lost_from,
        lost_to=lost_to,
        window_s=window,
        unacknowledged_present=len(unknown & present),
    )


# ---- the outage as the load saw it ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoadOutage:
    first_failure_at: float | None  # end of the first failed operation that ended after the fault
    recovered_at: float | None  # ack of the first write that started after that failure began


def load_outage(samples: LoadSamples, fault_at: float) -> LoadOutage:
    """With many writers in flight, recovery is the earliest acknowledged write that *started* at or
    after the start of the first failure after the fault: a write already in flight then may still
    have been acknowledged by the failing node."""
    n = len(samples)
    failures = [i for i in range(n) if not samples.flags[i] & FLAG_OK and samples.end[i] >= fault_at]
    first = min(failures, key=lambda i: (samples.end[i], samples.start[i]), default=None)
    if first is None:
        return LoadOutage(None, None)
    began = max(fault_at, samples.start[first])
    rec = [
        samples.end[i]
        for i in range(len(samples))
        if samples.flags[i] == FLAG_OK and samples.start[i] >= began
    ]
    return LoadOutage(samples.end[first], min(rec) if rec else None)


# ---- throughput and latency ------------------------------------------------------------------------
def window_width(span_s: float, max_windows: int = MAX_WINDOWS) -> float:
    """The narrowest of a few round widths that cuts `span_s` into at most `max_windows` windows."""
    for width in _WIDTHS:
        if span_s / width <= max_windows:
            return width
    return span_s / max_windows


def _latencies_ms(samples: LoadSamples, idx: Iterable[int]) -> list[float]:
    return sorted((samples.end[i] - samples.start[i]) * 1000 for i in idx if samples.flags[i] & FLAG_OK)


def _r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def windows(samples: LoadSamples, start: float, stop: float, t0: float, width: float) -> list[LoadWindow]:
    """Fixed windows from `start` to `stop` (monotonic); an operation counts in the window it ended in.
    `t_s` is the window's start relative to `t0` (the drill's start)."""
    if stop <= start or width <= 0:
        return []
    count = max(1, math.ceil((stop - start) / width - 1e-9))
    buckets: list[list[int]] = [[] for _ in range(count)]
    for i in range(len(samples)):
        e = samples.end[i]
        if start <= e <= stop:
            buckets[min(count - 1, int((e - start) / width))].append(i)
    out = []
    for k, bucket in enumerate(buckets):
        w_start = start + k * width
        dur = min(width, stop - w_start)
        lat = _latencies_ms(samples, bucket)
        ok = len(lat)
        out.append(
            LoadWindow(
                t_s=round(w_start - t0, 6),
                dur_s=round(dur, 6),
                ok=ok,
                failed=len(bucket) - ok,
                ops_per_s=round(ok / dur, 3) if dur > 0 else 0.0,
                p50_ms=_r3(percentile(lat, 50)),
                p99_ms=_r3(percentile(lat, 99)),
            )
        )
    return out


def phase(samples: LoadSamples, name: PhaseName, start: float, end: float, t0: float) -> LoadPhase:
    """Operations that *started* in [start, end): attempts, acks and rates; latency of the acks."""
    idx = [i for i in range(len(samples)) if start <= samples.start[i] < end]
    lat = _latencies_ms(samples, idx)
    span = end - start
    return LoadPhase(
        name=name,
        start_s=round(start - t0, 6),
        end_s=round(end - t0, 6),
        attempted=len(idx),
        ok=len(lat),
        failed=len(idx) - len(lat),
        attempted_per_s=round(len(idx) / span, 3) if span > 0 else 0.0,
        ok_per_s=round(len(lat) / span, 3) if span > 0 else 0.0,
        p50_ms=_r3(percentile(lat, 50)),
        p99_ms=_r3(percentile(lat, 99)),
    )


def phases(
    samples: LoadSamples,
    *,
    started: float,
    stopped: float,
    fault_at: float | None,
    recovered_at: float | None,
    t0: float,
) -> list[LoadPhase]:
    """before / during / after; without a fault, one `before` phase over the whole load. A phase
    that would be empty in time is left out."""
    if fault_at is None or fault_at >= stopped:
        return [phase(samples, "before", started, stopped, t0)]
    fault = max(started, fault_at)
    out = []
    if fault > started:
        out.append(phase(samples, "before", started, fault, t0))
    back = stopped if recovered_at is None else min(max(recovered_at, fault), stopped)
    if back > fault:
        out.append(phase(samples, "during", fault, back, t0))
    if stopped > back:
        out.append(phase(samples, "after", back, stopped, t0))
    return out


def achieved_rate(found: Sequence[LoadPhase]) -> float:
    """Attempts per second while the service was up: the `before` phase when it lasted at least half
    a second, else `before` and `after` together, else the whole load."""
    by = {p.name: p for p in found}
    before = by.get("before")
    if before is not None and before.end_s - before.start_s >= 0.5:
        return before.attempted_per_s
    up = [p for p in found if p.name != "during"] or list(found)
    span = sum(p.end_s - p.start_s for p in up)
    return round(sum(p.attempted for p in up) / span, 3) if span > 0 else 0.0


# ---- the whole evidence -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoadShape:
    """What was asked of the load, and how it reached the store."""

    store: str
    client: str
    writers: int
    requested_per_s: float
    read_share: float
    row_bytes: int


def summarize(
    samples: LoadSamples,
    shape: LoadShape,
    *,
    t0: float,
    started: float,
    stopped: float,
    fault_at: float | None,
    recovered_at: float | None,
    present: frozenset[int] | None,
    verify_error: str | None = None,
) -> LoadStats:
    """The load's evidence. `recovered_at` is the drill's recovery (canary); when it is unknown the
    load's own first recovered write bounds the `during` phase. `present` None: not read back."""
    outage = load_outage(samples, fault_at) if fault_at is not None else LoadOutage(None, None)
    back = recovered_at if recovered_at is not None else outage.recovered_at
    found = phases(samples, started=started, stopped=stopped, fault_at=fault_at, recovered_at=back, t0=t0)
    achieved = achieved_rate(found)
    reached = achieved >= REACHED_SHARE * shape.requested_per_s
    loss = load_loss(samples, present) if present is not None else None
    writes = [i for i in range(len(samples)) if not samples.flags[i] & FLAG_READ]
    writes_ok = sum(1 for i in writes if samples.flags[i] & FLAG_OK)
    reads = len(samples) - len(writes)
    reads_ok = sum(1 for i in range(len(samples)) if samples.flags[i] == FLAG_OK | FLAG_READ)

    def rel(value: float | None) -> float | None:
        return None if value is None else round(value - t0, 6)

    note = ""
    if not reached:
        note = (
            f"the load issued {achieved:g} operations/s of the {shape.requested_per_s:g} requested "
            f"({achieved / shape.requested_per_s:.1%}) while the service was up: this client on this "
            "machine cannot drive the requested rate"
        )
    return LoadStats(
        store=shape.store,
        client=shape.client,
        writers=shape.writers,
        requested_per_s=shape.requested_per_s,
        achieved_per_s=achieved,
        reached=reached,
        read_share=shape.read_share,
        row_bytes=shape.row_bytes,
        started_s=round(started - t0, 6),
        stopped_s=round(stopped - t0, 6),
        attempted=len(samples),
        acknowledged_writes=len(acknowledged_writes(samples)),
        failed_writes=len(writes) - writes_ok,
        reads_ok=reads_ok,
        reads_failed=reads - reads_ok,
        errors=dict(samples.errors),
        verified=loss is not None,
        verify_error=verify_error,
        lost_writes=loss.lost if loss else None,
        lost_seqs=list(loss.lost_seqs) if loss else [],
        lost_from_s=rel(loss.lost_from) if loss else None,
        lost_to_s=rel(loss.lost_to) if loss else None,
        rpo_window_s=round(loss.window_s, 6) if loss else None,
        unacknowledged_present=loss.unacknowledged_present if loss else None,
        first_failure_s=rel(outage.first_failure_at),
        recovered_s=rel(outage.recovered_at),
        phases=found,
        windows=windows(samples, started, stopped, t0, window_width(stopped - started)),
        note=note,
    )
