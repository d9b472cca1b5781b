"""The failover drill: lose the primary, get a standby promoted, prove writes resume and nothing
acknowledged was lost. The same procedure serves PostgreSQL and Redis, local staging and AWS: it only
talks to a FailoverTarget.

Order: steady state -> probes -> fault (-> clear, for a timed fault) -> promotion -> first
acknowledged write on the recovered endpoint (deadline) -> read back -> restore topology -> measure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from firedrill.catalogue import BUILTIN_FEATURES, DrillSpec, LocalPlan
from firedrill.drills.base import DrillRun, loss_measurements, round6
from firedrill.drills.exclusive import hold_lease, release_lease
from firedrill.drills.ha import review as review_ha
from firedrill.drills.ha import start_watch, stop_watch
from firedrill.errors import DeadlineExceeded, HarnessError, TargetError
from firedrill.evidence import EvidenceRecord, Measurements
from firedrill.measure import LossResult, OutageResult, measure_loss, measure_outage
from firedrill.targets.base import FailoverTarget, FaultKind, FaultSpec
from firedrill.targets.lease import LeaseKeeper
from firedrill.timeline import EventKind, Op, Sample

SPEC = DrillSpec(
    name="failover",
    summary="PostgreSQL primary lost (kill, stop, freeze, network cut); RDS Multi-AZ/Aurora on AWS",
    feature=BUILTIN_FEATURES / "failover.feature",
    category="failover",
    stores=("postgres",),
    steps=(
        "firedrill.steps.failover",
        "firedrill.steps.aws",
        "firedrill.steps.load",
        "firedrill.steps.patroni",
    ),
    local_plan=LocalPlan(
        starts="a PostgreSQL primary and a streaming standby",
        faults="kill / stop / freeze the primary, cut the network to it",
    ),
    aws_plan="firedrill.targets.aws_rds:plan_target",
)


@dataclass(frozen=True, slots=True)
class FailoverSettings:
    max_lag_s: float = 1.0  # steady state: a fresh commit reaches the standby within this
    steady_timeout_s: float = 30.0
    baseline_s: float = 1.0  # probing before the fault, so the timeline shows normal service
    recovery_timeout_s: float = 120.0  # the drill's own deadline for the first recovered write
    promote_timeout_s: float = 60.0
    settle_s: float = 1.0  # probing after recovery, so the timeline shows it held
    restore_timeout_s: float = 120.0


class FailoverDrill:
    def __init__(
        self, target: FailoverTarget, run: DrillRun, settings: FailoverSettings | None = None
    ) -> None:
        self.target = target
        self.run = run
        self.settings = settings or FailoverSettings()
        self.fault: FaultSpec | None = None
        self._started = False
        self._promoted = False
        self._present: frozenset[int] | None = None
        self._recovered_nodes: frozenset[str] | None = None
        self._outage: OutageResult | None = None
        self._loss: LossResult | None = None
        self._lease: LeaseKeeper | None = None  # one drill per target: held from steady state to evidence

    # ---- steps (each one a Gherkin step) ----------------------------------------------------------
    def establish_steady_state(self) -> None:
        if self._started:
            return
        self._started = True
        self._lease = hold_lease(self.target, self.run)  # before anything else: a second drill stops here
        s = self.settings
        self.run.check_steady_state(self.target, max_lag_s=s.max_lag_s, timeout_s=s.steady_timeout_s)
        self.target.prepare_canary(self.run.run_id)
        self.run.start_probe("writer", self.target.session_factory(self.run.run_id, self.run.probe_config))
        self.run.mark(EventKind.PROBES_STARTED, f"{self.run.probe_config.rate_hz:g} Hz")
        start_watch(self.target, self.run)  # an HA manager's own view (leader key, roles), if it has one
        time.sleep(s.baseline_s)
        ok = sum(1 for smp in self.run.timeline.snapshot()[0] if smp.ok)
        if ok == 0:
            raise TargetError("canary writes fail before any fault: the service is not healthy")

    def inject(self, fault: FaultSpec) -> None:
        if fault.kind not in self.target.supported_faults():
            supported = ", ".join(sorted(k.value for k in self.target.supported_faults()))
            raise HarnessError(f"fault '{fault.kind.value}' is not supported here (supported: {supported})")
        self.establish_steady_state()
        self.fault = fault
        self.run.fault = fault.kind.value
        self.run.mark(EventKind.FAULT_ISSUED, fault.kind.value)
        detail = self.target.inject(fault)
        self.run.mark(EventKind.FAULT_RETURNED, detail)
        # Fixed now: after topology restore the failed node is healthy again and must still not count.
        self._recovered_nodes = self.target.recovered_nodes(fault)
        if fault.kind is FaultKind.FREEZE:
            time.sleep(fault.duration_s)
            self.run.mark(EventKind.FAULT_CLEARED, self.target.clear(fault))

    def promote(self) -> None:
        if self._promoted:
            return
        self._promoted = True
        manual = self.target.promotion_is_manual()
        self.run.mark(
            EventKind.PROMOTION_STARTED, "firedrill promotes" if manual else "waiting for the platform"
        )
        detail = self.target.promote(timeout_s=self.settings.promote_timeout_s)
        self.run.mark(EventKind.PROMOTION_DONE, detail)

    def await_recovery(self) -> None:
        if self.fault is None:
            raise HarnessError("no fault was injected, so there is nothing to recover from")
        if self.run.timeline.first(EventKind.RECOVERED) is not None:
            return
        recovered = self._recovered_nodes
        deadline = time.monotonic() + self.settings.recovery_timeout_s
        while True:
            samples, events = self.run.timeline.snapshot()
            outage = measure_outage(samples, events, recovered_nodes=recovered)
            if outage.recovered and outage.recovered_node:
                self.run.mark(EventKind.RECOVERED, f"first acknowledged write on {outage.recovered_node}")
                break
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"no acknowledged write on the recovered endpoint within "
                    f"{self.settings.recovery_timeout_s:g} s of the fault"
                )
            time.sleep(0.02)
        time.sleep(self.settings.settle_s)

    def verify(self) -> None:
        self.run.stop_probes()
        self._present = self.target.read_back(self.run.run_id)
        samples, _ = self.run.timeline.snapshot()
        loss = measure_loss(samples, self._present)
        self._loss = loss
        lost = ", ".join(str(s) for s in loss.lost_seqs[:20]) + (" ..." if loss.lost > 20 else "")
        self.run.check(
            "every acknowledged write is on the recovered primary",
            loss.lost == 0,
            f"{loss.surviving}/{loss.acknowledged} present" + (f"; lost seq {lost}" if loss.lost else ""),
            blocking=self._zero_loss_promised,
        )
        self.run.mark(EventKind.VERIFIED, f"{loss.surviving}/{loss.acknowledged} acknowledged writes present")

    def restore_topology(self) -> None:
        done = self.target.restore_topology(timeout_s=self.settings.restore_timeout_s)
        self.run.check("topology restored", True, done)
        self.run.mark(EventKind.TOPOLOGY_RESTORED, done)

    # ---- the whole drill ---------------------------------------------------------------------------
    def conclude(self) -> EvidenceRecord:
        """Finish whatever steps remain, then measure and write evidence. Always leaves evidence;
        a failure along the way is recorded in it, not raised."""
        if self.run.evidence is not None:
            return self.run.evidence
        try:
            if self.fault is not None and self.run.error is None:
                if self.fault.kind in (FaultKind.KILL, FaultKind.STOP) and not self._promoted:
                    self.promote()
                self.await_recovery()
                self.verify()
        except (HarnessError, KeyboardInterrupt) as exc:
            self.run.record_failure(exc)
            if isinstance(exc, KeyboardInterrupt):
                self._finish_safely()
                raise
        finally:
            self.run.stop_probes()
            stop_watch(self.target)
        self._restore_safely()
        return self._finish_safely()

    @property
    def _zero_loss_promised(self) -> bool:
        """Lost writes breach the drill only where the scenario promises none; otherwise the RPO
        objective judges them and the loss is reported as a finding."""
        return self.run.objectives.max_lost_writes is not None

    def _check_stale_acks(self, outage: OutageResult, samples: list[Sample]) -> None:
        count, lost = _stale_lost(samples, outage.fault_at, self._recovered_nodes, self._present)
        detail = f"{count} acknowledged by the failed node after the fault was issued"
        if self._present is None:
            detail += "; survival not verified"
        elif lost:
            detail += f"; {len(lost)} of them lost (split brain): seq {', '.join(map(str, lost[:20]))}"
        self.run.check(
            "no write acknowledged by a failed node after the fault is lost",
            not lost,
            detail,
            blocking=self._zero_loss_promised,
        )

    def _restore_safely(self) -> None:
        if self.fault is None:
            return
        try:
            self.restore_topology()
        except HarnessError as exc:
            self.run.check("topology restored", False, str(exc).splitlines()[0] if str(exc) else "failed")
            self.run.record_failure(exc)

    def _finish_safely(self) -> EvidenceRecord:
        samples, events = self.run.timeline.snapshot()
        m = Measurements()
        values: dict[str, float | None] = {"rto": None, "rpo": None, "lost_writes": None}
        if self.fault is not None and any(e.kind is EventKind.FAULT_ISSUED for e in events):
            outage = measure_outage(samples, events, recovered_nodes=self._recovered_nodes)
            self._outage = outage
            self._check_stale_acks(outage, samples)
            loss = self._loss
            ha = review_ha(self.run, outage, self.fault)  # None unless an HA manager was watched
            m = Measurements(
                rto_s=round6(outage.rto_s),
                recovered=outage.recovered,
                outage_seen=outage.outage_seen,
                outage_s=round6(outage.outage_s),
                failed_writes=outage.failed_writes,
                **loss_measurements(loss),
                recovered_node=outage.recovered_node,
                phases=ha.phases if ha and ha.phases else list(outage.phases),
                extra={
                    "stale_acks": outage.stale_acks,
                    "max_gap_s": round6(outage.max_gap_s),
                    "fault_duration_s": self.fault.duration_s or None,
                    **(ha.extra if ha else {}),
                },
            )
            values = {
                "rto": outage.rto_s,
                "rpo": loss.window_s if loss else None,
                "lost_writes": float(loss.lost) if loss else None,
            }
        record = self.run.finish(m, values)
        release_lease(self._lease)
        self._lease = None
        return record


def _stale_lost(
    samples: list[Sample], fault_at: float, recovered: frozenset[str] | None, present: frozenset[int] | None
) -> tuple[int, list[int]]:
    """Writes a failed node acknowledged after the fault was issued, and which of them were lost.
    Acks during a graceful shutdown are legitimate when they survive; lost ones are split brain."""
    if recovered is None:
        return 0, []
    stale = [
        s.seq
        for s in samples
        if s.op is Op.WRITE and s.ok and s.start >= fault_at and s.node not in recovered
    ]
    lost = [seq for seq in stale if present is not None and seq not in present]
    return len(stale), lost
