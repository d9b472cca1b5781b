"""State shared by the steps of one scenario: the drill being run and its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field

from drills.base import DrillRun, Objectives
from drills.failover import FailoverDrill, FailoverSettings
from harness.config import Profile
from harness.evidence import EvidenceRecord
from harness.probes import ProbeConfig
from harness.run_context import RunContext
from harness.targets.base import FailoverTarget


@dataclass
class DrillHolder:
    profile: Profile
    ctx: RunContext
    objectives: Objectives
    scenario: str = ""
    rate_hz: float | None = None
    drill: FailoverDrill | None = None
    pending_error: BaseException | None = field(default=None, repr=False)

    def failover(self, name: str, target: FailoverTarget) -> FailoverDrill:
        if self.drill is None:
            probe = ProbeConfig(
                rate_hz=self.rate_hz or self.profile.probe.rate_hz,
                op_timeout_s=self.profile.probe.op_timeout_s,
            )
            run = DrillRun(
                drill=name,
                scenario=self.scenario,
                ctx=self.ctx,
                objectives=self.objectives,
                probe_config=probe,
            )
            self.drill = FailoverDrill(
                target, run, FailoverSettings(recovery_timeout_s=self.profile.recovery_timeout_s)
            )
        return self.drill

    def record_failure(self, exc: BaseException) -> None:
        if self.drill is not None:
            self.drill.run.record_failure(exc)

    def conclude(self) -> EvidenceRecord | None:
        return self.drill.conclude() if self.drill is not None else None

    def verdict_for(self, objective: str) -> str:
        record = self.conclude()
        assert record is not None, "no drill ran in this scenario"
        for v in record.verdicts:
            if v.objective == objective:
                status = "met" if v.met else "NOT met"
                measured = "not measured" if v.measured is None else f"{v.measured:.3f} {v.unit}"
                return f"{objective} {status}: measured {measured}, limit {v.limit:g} {v.unit}"
        raise AssertionError(f"objective {objective} was not judged")

    def assert_met(self, objective: str) -> None:
        record = self.conclude()
        assert record is not None
        text = self.verdict_for(objective)
        where = f" (evidence: {self.drill.run.evidence_path})" if self.drill else ""
        if record.error:
            raise AssertionError(f"drill error: {record.error}{where}")
        assert "NOT met" not in text, text + where
