"""Calibration on real PostgreSQL processes: a known loss is reported exactly, and short outages of
known length are measured within a generous bound (the machine is shared; `firedrill calibrate`
is where the precise distribution is taken)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from firedrill.drills import calibration as calibrate
from firedrill.drills.calibration_trials import CalibrationSettings, Kind
from firedrill.run_context import RunContext

GENEROUS_S = 0.100


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    return RunContext(environment="local", via="test", out_root=tmp_path)


@pytest.mark.parametrize("writes", [1, 7])
def test_known_loss_is_reported_exactly_with_its_sequence_numbers(ctx: RunContext, writes: int) -> None:
    settings = CalibrationSettings(loss_writes=(writes,), loss_stores=("postgres",), baseline_writes=10)
    run = calibrate.new_run(ctx, settings, f"known loss {writes}", ())
    case = calibrate.pg_known_loss(run, writes, settings)
    assert case.expected == tuple(range(11, 11 + writes))
    assert case.reported == case.expected and case.exact
    assert case.acknowledged == 10 + writes
    result = calibrate.CalibrationResult(settings, losses=[case])
    record = calibrate.record(run, result)
    assert record.verdict == "passed", record.error
    assert record.measurements.lost_seqs == list(case.expected)
    assert record.measurements.extra[f"loss.postgres.n{writes}.reported"] == writes


def test_short_outages_are_measured_within_a_generous_bound(ctx: RunContext) -> None:
    settings = CalibrationSettings(
        durations_s=(0.3,),
        trials=1,
        kinds=(Kind.FREEZE_POSTGRES, Kind.CUT_BLACKHOLE, Kind.CUT_RESET),
        loss_writes=(),
        loss_stores=(),
        trial_bound_s=GENEROUS_S,
        target_p95_s=GENEROUS_S,
    )
    done = calibrate.run_calibration(settings, ctx, progress=lambda _line: None)
    trials = done.result.trials
    assert [t.kind for t in trials] == list(settings.kinds)
    for t in trials:
        assert t.true_s >= 0.3, t  # the injected outage really lasted its length
        assert t.error_s is not None, t
        assert -0.005 <= t.error_s <= GENEROUS_S, t  # recovery is seen after the outage, not before
        assert t.outage_seen or t.planned_s < 0.25  # shorter than the gap threshold: a gap only
    record = done.record
    assert record.verdict == "passed", (record.error, [c.detail for c in record.checks])
    assert len(record.checks) == 3 and all(c.passed for c in record.checks)
    assert {"freeze-postgres.error_p95_ms", "cut-reset.abs_error_max_ms"} <= record.measurements.extra.keys()
    assert done.evidence_path is not None
    on_disk = json.loads(done.evidence_path.read_text())
    assert on_disk["drill"] == "calibration" and len(on_disk["samples"]) > 50


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(Exception, match="trials"):
        replace(CalibrationSettings(), trials=0)
    with pytest.raises(Exception, match="durations"):
        CalibrationSettings(durations_s=(0.0,))
