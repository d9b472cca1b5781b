"""What every drill shares: the timeline, the probes, the objectives and the evidence it leaves.

A drill subclass knows the order of its steps; this base turns whatever happened (a verdict, a
breach, an exception, an interrupt) into one evidence record and its reports, exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from firedrill.audit.controls import compliance_refs
from firedrill.errors import DeadlineExceeded, HarnessError
from firedrill.evidence import (
    Check,
    ControlRef,
    EventRecord,
    EvidenceRecord,
    Measurements,
    Objective,
    ObjectiveVerdict,
    ProbeStats,
    SampleRecord,
    SignOff,
    Verdict,
    new_run_id,
    utc_iso,
    write_evidence,
)
from firedrill.measure import LossResult, judge, probe_stats
from firedrill.probes import CanaryWriter, ProbeConfig, SessionFactory
from firedrill.publish.hook import record_run
from firedrill.report.run_report import render_reports
from firedrill.run_context import RunContext
from firedrill.targets.base import TargetDescription
from firedrill.timeline import EventKind, Timeline

log = logging.getLogger(__name__)

DEFAULT_SIGNOFF = ("Drill operator", "Service owner", "Auditor / reviewer")

# What every drill record evidences, from the one compliance catalogue.
COMPLIANCE: tuple[ControlRef, ...] = compliance_refs()


class Traffic(Protocol):
    """Traffic beside the canary (a background load, a service probe): started with the probes,
    stopped with them, and folded into the evidence before the verdict (`firedrill.drills.load`)."""

    def start(self, run: DrillRun) -> None: ...

    def stop(self, run: DrillRun) -> None:
        """Stop (idempotent) and read back what it wrote, while the recovered store is fresh."""
        ...

    def conclude(self, run: DrillRun, values: dict[str, float | None]) -> dict[str, Any]:
        """Add its checks, fold its figures into the objectives' `values`; return evidence fields."""
        ...


class SteadyStateSource(Protocol):
    def describe(self) -> TargetDescription: ...

    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class Objectives:
    """The promises under test. Defaults are the platform's: RTO 15 min, RPO 5 min."""

    rto_s: float = 900.0
    rpo_s: float = 300.0
    max_lost_writes: int | None = None  # "no acknowledged write is lost" sets 0

    def as_list(self) -> list[Objective]:
        items = [
            Objective(
                name="rto",
                limit=self.rto_s,
                unit="s",
                description=f"service accepts writes again within {_human(self.rto_s)}",
            ),
            Objective(
                name="rpo",
                limit=self.rpo_s,
                unit="s",
                description=f"acknowledged data lost spans at most {_human(self.rpo_s)}",
            ),
        ]
        if self.max_lost_writes is not None:
            items.append(
                Objective(
                    name="lost_writes",
                    limit=float(self.max_lost_writes),
                    unit="writes",
                    description="acknowledged writes lost"
                    if self.max_lost_writes
                    else "no acknowledged write is lost",
                )
            )
        return items


def _human(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} s"


def round6(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def loss_measurements(loss: LossResult | None) -> dict[str, Any]:
    """The RPO half of Measurements, shared by every drill that reads its canary writes back;
    everything stays None (not measured) when the read-back did not happen."""
    if loss is None:
        return {}
    return {
        "rpo_window_s": round6(loss.window_s),
        "acknowledged_writes": loss.acknowledged,
        "lost_writes": loss.lost,
        "lost_seqs": list(loss.lost_seqs),
        "unacknowledged_present": loss.unacknowledged_present,
    }


@dataclass
class DrillRun:
    """The record of one drill run while it happens."""

    drill: str
    scenario: str
    ctx: RunContext
    objectives: Objectives = field(default_factory=Objectives)
    probe_config: ProbeConfig = field(default_factory=ProbeConfig)
    run_id: str = ""
    timeline: Timeline = field(default_factory=Timeline)
    checks: list[Check] = field(default_factory=list)
    fault: str | None = None
    target: TargetDescription | None = None
    error: str | None = None
    aborted: bool = False
    evidence: EvidenceRecord | None = None
    evidence_path: Path | None = None
    _probes: list[CanaryWriter] = field(default_factory=list)
    traffic: list[Traffic] = field(default_factory=list)
    _started_mono: float = field(default_factory=time.monotonic)
    _started_wall: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not self.run_id:
            self.run_id = new_run_id(self.drill)

    @property
    def started_mono(self) -> float:
        """The drill's start on the monotonic clock: the evidence's t = 0."""
        return self._started_mono

    @property
    def run_dir(self) -> Path:
        return self.ctx.out_root / self.run_id

    # ---- while running -------------------------------------------------------------------------
    def mark(self, kind: EventKind, detail: str = "") -> None:
        self.timeline.mark(kind, detail)
        log.info("%s %s", kind.value, detail)

    def check(self, name: str, passed: bool, detail: str = "", *, blocking: bool = True) -> bool:
        self.checks.append(Check(name=name, passed=passed, detail=detail, blocking=blocking))
        return passed

    def check_steady_state(self, target: SteadyStateSource, *, max_lag_s: float, timeout_s: float) -> None:
        """Describe the target and prove steady state before any fault; SteadyStateNotMet propagates
        (no fault is injected) and becomes the evidence's error."""
        self.target = target.describe()
        observed = target.check_steady_state(max_lag_s=max_lag_s, timeout_s=timeout_s)
        detail = ", ".join(f"{k}={v}" for k, v in observed.items())
        self.check("steady state before the fault", True, detail)
        self.mark(EventKind.STEADY_STATE_OK, detail)

    def start_probe(self, name: str, factory: SessionFactory) -> None:
        for traffic in self.traffic:  # the background load first: the probes' baseline is under it
            traffic.start(self)
        probe = CanaryWriter(name, factory, self.timeline, self.probe_config)
        self._probes.append(probe)
        probe.start()

    def stop_probes(self) -> None:
        for traffic in self.traffic:
            traffic.stop(self)
        if not self._probes:
            return
        for probe in self._probes:
            probe.stop()
        self._probes.clear()
        self.mark(EventKind.PROBES_STOPPED)

    def record_failure(self, exc: BaseException) -> None:
        """An exception is data: it ends up in the evidence with the verdict 'error' or 'aborted'."""
        if isinstance(exc, DeadlineExceeded | KeyboardInterrupt):
            self.aborted = True
        text = str(exc).strip().splitlines()
        message = text[0] if text else type(exc).__name__
        if not isinstance(exc, HarnessError):
            message = f"{type(exc).__name__}: {message}"
        self.error = self.error or message
        self.mark(EventKind.ERROR, message)

    # ---- the end -------------------------------------------------------------------------------
    def finish(self, measurements: Measurements, values: dict[str, float | None]) -> EvidenceRecord:
        """Judge, write evidence and reports. Idempotent: the first call wins."""
        if self.evidence is not None:
            return self.evidence
        self.stop_probes()
        values = dict(values)
        extras: dict[str, Any] = {}
        for traffic in self.traffic:
            extras.update(traffic.conclude(self, values))
        verdicts = judge(self.objectives.as_list(), values)
        record = self._record(measurements, verdicts).model_copy(update=extras)
        self.evidence = record
        self.evidence_path = write_evidence(record, self.run_dir)
        # Ledger (chained record rewritten to evidence.json), webhook, metrics; never raises.
        self.evidence = record = record_run(record, self.evidence_path)
        self._render(record)
        return record

    def _verdict(self, verdicts: Sequence[ObjectiveVerdict]) -> Verdict:
        if self.aborted:
            return "aborted"
        if self.error:
            return "error"
        if all(v.met for v in verdicts) and all(c.passed or not c.blocking for c in self.checks):
            return "passed"
        return "failed"

    def _record(self, measurements: Measurements, verdicts: list[ObjectiveVerdict]) -> EvidenceRecord:
        samples, events = self.timeline.snapshot()
        t0 = self._started_mono
        finished = time.time()
        stats: ProbeStats | None = None
        if samples:
            stats = probe_stats(
                samples,
                target_hz=self.probe_config.rate_hz,
                op_timeout_s=self.probe_config.op_timeout_s,
                connect_timeout_s=self.probe_config.connect_timeout_s,
            )
        target = self.target or TargetDescription(kind="unknown", environment_kind="unknown")
        return EvidenceRecord(
            run_id=self.run_id,
            drill=self.drill,
            scenario=self.scenario,
            fault=self.fault,
            started_at=utc_iso(self._started_wall),
            finished_at=utc_iso(finished),
            duration_s=round(finished - self._started_wall, 3),
            environment=self.ctx.environment_record(target),
            operator=self.ctx.operator_record(),
            objectives=self.objectives.as_list(),
            verdicts=verdicts,
            checks=list(self.checks),
            measurements=measurements,
            verdict=self._verdict(verdicts),
            error=self.error,
            timeline=[
                EventRecord(
                    kind=e.kind.value, t_s=round(e.mono - t0, 6), wall=utc_iso(e.wall), detail=e.detail
                )
                for e in events
            ],
            samples=[
                SampleRecord(
                    probe=s.probe,
                    seq=s.seq,
                    op=s.op.value,
                    t_s=round(s.start - t0, 6),
                    dur_ms=round((s.end - s.start) * 1000, 3),
                    ok=s.ok,
                    error=s.error,
                    node=s.node,
                )
                for s in sorted(samples, key=lambda s: s.start)
            ],
            probe_stats=stats,
            signoff=[SignOff(role=r) for r in DEFAULT_SIGNOFF],
            compliance=list(COMPLIANCE),
        )

    def _render(self, record: EvidenceRecord) -> None:
        try:
            render_reports(record, self.run_dir)
        except Exception as exc:  # evidence is written; a report can be rendered again from it
            log.error("report rendering failed for %s: %s", self.run_id, exc)
