"""The service probe as part of a drill: an HTTP canary through an application endpoint, beside the
store-level canary, on the same monotonic clock, measured by the same rules (`firedrill.measure`).

- Service RTO: the fault to the first acknowledged request after the outage (any node behind the
  service counts). The store's RTO is the canary's. The difference is the application's own part of
  the outage, named after what the service answered meanwhile (`gap_phase`): a pool that has not
  reconnected yet refuses with PoolTimeout ("pool reconnect"), a pool handing out dead connections
  fails them ("stale pooled connections"), and so on.
- The service cannot be back before the store it writes to; a measurement that says otherwise is
  shown as a failed check (a finding about the harness), never silently.
- The platform's RTO objective promises that the *service* accepts writes again within its limit,
  so a service RTO over that limit fails a blocking check, whatever the store's figure.
- Loss: the probe's acknowledged writes are read back through the application; lost ones count in
  the `lost_writes` objective like the canary's and the load's.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from firedrill.drills.base import DrillRun
from firedrill.errors import HarnessError, first_line
from firedrill.evidence_load import ServiceStats
from firedrill.load import http as service_http
from firedrill.load.accounting import percentile
from firedrill.measure import measure_loss, measure_outage
from firedrill.probes import CanaryWriter, ProbeConfig
from firedrill.timeline import Event, EventKind, Op, Sample, Timeline

ORDER_CHECK = "the service recovered no earlier than the store"
RTO_CHECK = "the service accepts writes again within the RTO objective"
LOSS_CHECK = "every write the service acknowledged is readable through it"

_PHASES = (
    ("PoolTimeout", "pool reconnect"),
    ("OperationalError", "stale pooled connections"),
    ("ConnectionLost", "stale pooled connections"),
    ("AdminShutdown", "stale pooled connections"),
    ("ReadOnly", "application still on the old primary"),
    ("ConnectError", "application unreachable"),
    ("Timeout", "application stalled"),
)


def gap_phase(errors: Counter[str], gap_s: float | None, period_s: float) -> str:
    """What the service did between the store's recovery and its own, from the errors it answered
    then; '' when it came back with the store (within two probe periods)."""
    if gap_s is None or gap_s <= 2 * period_s:
        return ""
    for word, phase in _PHASES:
        if any(word in e for e in errors.elements()):
            return phase
    return "application recovery" if errors else "no failed request seen (probe resolution)"


class ServiceProbe:
    """`firedrill.drills.base.Traffic`: the HTTP canary through one application URL."""

    def __init__(
        self,
        url: str,
        probe: ProbeConfig,
        *,
        store: str | None = None,
        label: str = "",
        recovery_timeout_s: float = 60.0,
    ) -> None:
        self.url = url
        self.recovery_timeout_s = recovery_timeout_s
        self.probe = probe
        self.store = store
        self.label = label or url
        self.timeline = Timeline()
        self._writer: CanaryWriter | None = None
        self._probe_id = ""
        self._present: frozenset[int] | None = None
        self._verify_error: str | None = None
        self._stopped = False

    def start(self, run: DrillRun) -> None:
        if self._writer is not None:
            return
        self._probe_id = f"{run.run_id}-service"
        pid, url, store, timeout = self._probe_id, self.url, self.store, self.probe.op_timeout_s
        self._writer = CanaryWriter(
            "service",
            lambda: service_http.HttpServiceSession(url, pid, timeout, store),
            self.timeline,
            self.probe,
        )
        self._writer.start()
        run.mark(EventKind.NOTE, f"service probe started: {self.label} at {self.probe.rate_hz:g} Hz")

    def stop(self, run: DrillRun) -> None:
        if self._writer is None or self._stopped:
            return
        self._stopped = True
        self._await_service(run)
        self._writer.stop()
        try:
            self._present = service_http.read_back(self.url, self._probe_id, store=self.store)
        except HarnessError as exc:
            self._verify_error = first_line(exc)

    def conclude(self, run: DrillRun, values: dict[str, float | None]) -> dict[str, Any]:
        if self._writer is None:
            return {}
        self.stop(run)
        samples, _ = self.timeline.snapshot()
        stats = self._stats(run, samples, store_rto_s=values.get("rto"))
        self._mark_recovery(run, samples, stats)
        if stats.rto_s is not None and stats.store_rto_s is not None:
            run.check(
                ORDER_CHECK,
                stats.rto_s >= stats.store_rto_s,
                f"service {stats.rto_s:.3f} s, store {stats.store_rto_s:.3f} s",
                blocking=False,
            )
        if "rto" in values:
            limit = run.objectives.rto_s
            measured = "not measured" if stats.rto_s is None else f"{stats.rto_s:.3f} s"
            run.check(
                RTO_CHECK,
                stats.rto_s is not None and stats.rto_s <= limit,
                f"service RTO {measured}, limit {limit:g} s",
            )
        detail = (
            f"not read back: {stats.verify_error}"
            if stats.lost_writes is None
            else f"{stats.acknowledged - stats.lost_writes}/{stats.acknowledged} present"
        )
        run.check(
            LOSS_CHECK, stats.lost_writes == 0, detail, blocking=run.objectives.max_lost_writes is not None
        )
        if "lost_writes" in values:
            other = values["lost_writes"]
            values["lost_writes"] = (
                None if other is None or stats.lost_writes is None else other + stats.lost_writes
            )
        return {"service": stats}

    def _await_service(self, run: DrillRun) -> None:
        """The drill stops probing soon after the *store* is back; an application that is slower to
        recover (a pool backing off) is waited for, up to `recovery_timeout_s`, so its RTO is
        measured rather than cut short. Only once the store has recovered: otherwise nothing would."""
        _, events = run.timeline.snapshot()
        if not any(e.kind is EventKind.RECOVERED for e in events):
            return
        deadline = time.monotonic() + self.recovery_timeout_s
        while time.monotonic() < deadline:
            writes = [s for s in self.timeline.snapshot()[0] if s.op is Op.WRITE]
            if writes and measure_outage(writes, events, recovered_nodes=None).recovered:
                time.sleep(min(0.5, 10 / self.probe.rate_hz))  # a few acknowledged requests after it
                return
            time.sleep(0.02)
        run.mark(
            EventKind.NOTE, f"the service did not recover within {self.recovery_timeout_s:g} s of the store"
        )

    @staticmethod
    def _mark_recovery(run: DrillRun, samples: Sequence[Sample], stats: ServiceStats) -> None:
        """Put the service's recovery on the drill's event timeline at the moment it happened (the
        probes have stopped, so the timeline is no longer written to)."""
        if stats.recovered_s is None:
            return
        at = run.started_mono + stats.recovered_s
        wall = next((s.wall + (s.end - s.start) for s in samples if s.ok and abs(s.end - at) < 1e-6), 0.0)
        phase = f"; between: {stats.gap_phase}" if stats.gap_phase else ""
        rto = f"{stats.rto_s or 0.0:.3f} s"
        detail = f"service back: first acknowledged request through the application (RTO {rto}{phase})"
        events = run.timeline.events
        keys = [e.mono for e in events]
        events.insert(bisect.bisect_right(keys, at), Event(EventKind.NOTE, at, wall, detail))

    def _stats(self, run: DrillRun, samples: Sequence[Sample], *, store_rto_s: float | None) -> ServiceStats:
        """`store_rto_s`: the drill's own RTO (the canary's, on the recovered endpoint)."""
        t0 = run.started_mono
        _, events = run.timeline.snapshot()
        writes = [s for s in samples if s.op is Op.WRITE]
        ok = [s for s in writes if s.ok]
        errors = Counter(s.error or "unknown" for s in writes if not s.ok)
        lat = sorted((s.end - s.start) * 1000 for s in ok)
        fault = min((e.mono for e in events if e.kind is EventKind.FAULT_ISSUED), default=None)
        rto = first_fail = recovered = None
        if fault is not None and writes:
            outage = measure_outage(writes, events, recovered_nodes=None)
            rto = outage.rto_s
            first_fail = outage.first_failure_at
            recovered = outage.first_recovered_at
        store_back = None if fault is None or store_rto_s is None else fault + store_rto_s
        gap = None if rto is None or store_rto_s is None else rto - store_rto_s
        between = Counter(
            s.error or "unknown"
            for s in writes
            if not s.ok
            and store_back is not None
            and recovered is not None
            and store_back <= s.end <= recovered
        )
        loss = measure_loss(writes, self._present) if self._present is not None else None

        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - t0, 6)

        return ServiceStats(
            url=self.label,
            target_hz=self.probe.rate_hz,
            attempted=len(writes),
            acknowledged=len({s.seq for s in ok}),
            failed=len(writes) - len(ok),
            errors=dict(errors),
            rto_s=None if rto is None else round(rto, 6),
            store_rto_s=None if store_rto_s is None else round(store_rto_s, 6),
            gap_s=None if gap is None else round(gap, 6),
            gap_phase=gap_phase(between, gap, 1.0 / self.probe.rate_hz),
            first_failure_s=rel(first_fail),
            recovered_s=rel(recovered),
            verified=loss is not None,
            verify_error=self._verify_error,
            lost_writes=loss.lost if loss else None,
            lost_seqs=list(loss.lost_seqs) if loss else [],
            rpo_window_s=round(loss.window_s, 6) if loss else None,
            p50_ms=None if not lat else round(percentile(lat, 50) or 0.0, 3),
            p99_ms=None if not lat else round(percentile(lat, 99) or 0.0, 3),
        )
