"""Steps of the calibration feature: one call into `firedrill.drills.calibration` each.

Fixtures live here: `calibration_staging`, one PostgreSQL staging with a probe-side fault proxy per
feature module, and `calibration`, the evidence of one scenario, written at teardown whatever
happened. The bound of a Then step becomes the run's objective before the evidence is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import pytest
from pytest_bdd import parsers, then, when

from firedrill.drills import calibration as calibrate
from firedrill.drills.base import DrillRun
from firedrill.drills.calibration import CalibrationObjectives, CalibrationResult
from firedrill.drills.calibration_trials import CalibrationSettings, Kind
from firedrill.evidence import EvidenceRecord
from firedrill.faults.proxy import CutMode, FaultProxy
from firedrill.manifest import append_manifest
from firedrill.run_context import RunContext
from firedrill.staging.postgres import PgStaging
from firedrill.steps.holder import DrillHolder

T = TypeVar("T")

# Probes as the drills run them by default (0.5 s deadline), at the calibration rate.
SETTINGS = CalibrationSettings(rate_hz=100.0, op_timeout_s=0.5, baseline_writes=10)


@dataclass
class PgLab:
    staging: PgStaging
    proxy: FaultProxy


@dataclass
class CalibrationCase:
    ctx: RunContext
    scenario: str
    result: CalibrationResult = field(default_factory=lambda: CalibrationResult(SETTINGS))
    run: DrillRun | None = None
    record: EvidenceRecord | None = None

    def start(self, kinds: tuple[Kind, ...] = (), *, loss: bool = False) -> DrillRun:
        if self.run is None:
            self.run = calibrate.new_run(
                self.ctx, replace(SETTINGS, loss_writes=(1,) if loss else ()), self.scenario, kinds
            )
        return self.run

    def act(self, action: Callable[[DrillRun], T], kinds: tuple[Kind, ...] = (), *, loss: bool = False) -> T:
        """Run one step's action; an exception is recorded in the evidence, then fails the step."""
        run = self.start(kinds, loss=loss)
        try:
            return action(run)
        except (Exception, KeyboardInterrupt) as exc:
            run.record_failure(exc)
            raise

    def finish(self, objectives: CalibrationObjectives | None = None) -> EvidenceRecord:
        assert self.run is not None, "no calibration case ran in this scenario"
        if self.record is None:
            if objectives is not None:
                self.run.objectives = objectives
            self.record = calibrate.record(self.run, self.result)
        return self.record


@pytest.fixture(scope="module")
def calibration_staging() -> Iterator[PgLab]:
    with PgStaging() as staging, FaultProxy(("127.0.0.1", staging.primary.port), name="probe") as proxy:
        staging.wait_steady(max_lag_s=1.0, timeout_s=30.0)
        yield PgLab(staging, proxy)


@pytest.fixture
def calibration(
    request: pytest.FixtureRequest, run_context: RunContext, holder: DrillHolder
) -> Iterator[CalibrationCase]:
    case = CalibrationCase(ctx=run_context, scenario=holder.scenario or request.node.name)
    yield case
    if case.run is not None:
        case.finish()  # evidence for every scenario, passed or failed
        manifest = request.config.getoption("firedrill_manifest")
        if manifest and case.run.evidence_path:
            append_manifest(Path(manifest), {"evidence": str(case.run.evidence_path)})


# ---- outages of known length --------------------------------------------------------------------------
@when(parsers.parse("the PostgreSQL primary is frozen for exactly {ms:d} ms"))
def freeze_exactly(calibration: CalibrationCase, calibration_staging: PgLab, ms: int) -> None:
    """Calibration: SIGSTOP of the primary for exactly N ms (the ground truth the RTO must match)."""
    trial = calibration.act(
        lambda run: calibrate.pg_freeze_trial(run, calibration_staging.staging, ms / 1000, 1, SETTINGS),
        (Kind.FREEZE_POSTGRES,),
    )
    calibration.result.trials.append(trial)


@when(parsers.parse("the network between the probe and PostgreSQL is blackholed for exactly {ms:d} ms"))
def blackhole_exactly(calibration: CalibrationCase, calibration_staging: PgLab, ms: int) -> None:
    """Calibration: the fault proxy blackholes the probe's traffic for exactly N ms."""
    lab, mode = calibration_staging, CutMode.BLACKHOLE
    trial = calibration.act(
        lambda run: calibrate.pg_cut_trial(run, lab.staging, lab.proxy, mode, ms / 1000, 1, SETTINGS),
        (Kind.CUT_BLACKHOLE,),
    )
    calibration.result.trials.append(trial)


@then(parsers.parse("the measured RTO is within {ms:d} ms of the true outage"))
def rto_within(calibration: CalibrationCase, ms: int) -> None:
    """The measured RTO is within N ms of the injected outage's true length."""
    kinds = tuple(calibration.result.kinds())
    record = calibration.finish(CalibrationObjectives(kinds=kinds, error_p95_s=ms / 1000, loss_cases=False))
    trials = "; ".join(c.detail for c in record.checks)
    assert record.error is None, f"calibration error: {record.error}"
    assert all(v.met for v in record.verdicts), f"|error| over {ms} ms: {trials}"


# ---- a loss of known size -----------------------------------------------------------------------------
@when(
    parsers.parse(
        "replication to the standby is cut, {n:d} writes are acknowledged by the primary alone, "
        "the primary is killed and the standby promoted"
    )
)
def known_loss(calibration: CalibrationCase, n: int) -> None:
    """Calibration: N writes acknowledged by the primary alone (replication cut), then the primary is
    killed and the standby promoted."""
    case = calibration.act(lambda run: calibrate.pg_known_loss(run, n, SETTINGS), loss=True)
    calibration.result.losses.append(case)


@then(parsers.parse("the drill reports exactly {n:d} lost writes with their sequence numbers"))
def reports_exact_loss(calibration: CalibrationCase, n: int) -> None:
    """The drill reports exactly N lost writes, with the very sequence numbers that were lost."""
    record = calibration.finish(CalibrationObjectives(kinds=(), loss_cases=True))
    assert record.error is None, f"calibration error: {record.error}"
    (case,) = calibration.result.losses
    assert len(case.expected) == n
    assert case.exact, f"expected lost seq {case.expected}, the drill reported {case.reported}"
    assert record.measurements.lost_seqs == list(case.expected)
