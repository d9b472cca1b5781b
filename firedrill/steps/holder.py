"""State shared by the steps of one scenario: the drill being run and its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pytest

from firedrill.config import Profile
from firedrill.drills.base import DrillRun, Objectives
from firedrill.drills.failover import FailoverDrill, FailoverSettings
from firedrill.evidence import EvidenceRecord, Measurements
from firedrill.probes import ProbeConfig
from firedrill.run_context import RunContext
from firedrill.targets.base import FailoverTarget

# (scenario name, its Then-step texts), stashed on the test item by the before-scenario hook so that
# fixtures created later can read the objectives a scenario states before any step runs.
SCENARIO = pytest.StashKey[tuple[str, list[str]]]()


class Drill(Protocol):
    """What the holder needs of any drill: its run record and a conclude() that writes evidence."""

    run: DrillRun

    def conclude(self) -> EvidenceRecord: ...


@dataclass
class DrillHolder:
    profile: Profile
    ctx: RunContext
    objectives: Objectives
    scenario: str = ""
    rate_hz: float | None = None
    drill: Drill | None = None
    drill_name: str = "drill"
    pending_error: BaseException | None = field(default=None, repr=False)
    bare_run: DrillRun | None = None

    def probed_run(self, drill: str) -> DrillRun:
        """A run of `drill` for this scenario, its probes at the scenario's rate (else the profile's):
        what every drill with canary probes starts from."""
        return DrillRun(
            drill=drill,
            scenario=self.scenario,
            ctx=self.ctx,
            objectives=self.objectives,
            probe_config=ProbeConfig(
                rate_hz=self.rate_hz or self.profile.probe.rate_hz,
                op_timeout_s=self.profile.probe.op_timeout_s,
            ),
        )

    def failover(self, name: str, target: FailoverTarget) -> FailoverDrill:
        if isinstance(self.drill, FailoverDrill):
            return self.drill
        if self.drill is None:
            drill = FailoverDrill(
                target,
                self.probed_run(name),
                FailoverSettings(recovery_timeout_s=self.profile.recovery_timeout_s),
            )
            self.drill = drill
            return drill
        raise TypeError("this scenario already runs another kind of drill")

    def current_failover(self) -> FailoverDrill:
        """The scenario's failover drill; a When-step before any Given one fails the step, in words."""
        if not isinstance(self.drill, FailoverDrill):
            pytest.fail("no failover drill was set up by a Given step")
        return self.drill

    def record_failure(self, exc: BaseException) -> None:
        if self.drill is not None:
            self.drill.run.record_failure(exc)
        elif self.pending_error is None:
            self.pending_error = exc

    @property
    def run(self) -> DrillRun | None:
        return self.drill.run if self.drill is not None else self.bare_run

    def conclude(self) -> EvidenceRecord | None:
        if self.drill is not None:
            return self.drill.conclude()
        if self.pending_error is None:
            return None
        # Failed or interrupted before the drill existed (e.g. while the staging started): the
        # attempt still leaves evidence saying what stopped it.
        if self.bare_run is None:
            self.bare_run = DrillRun(
                drill=self.drill_name, scenario=self.scenario, ctx=self.ctx, objectives=self.objectives
            )
            self.bare_run.record_failure(self.pending_error)
        return self.bare_run.finish(Measurements(), {})

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
        where = f" (evidence: {self.run.evidence_path})" if self.run else ""
        if record.error:
            raise AssertionError(f"drill error: {record.error}{where}")
        assert "NOT met" not in text, text + where
