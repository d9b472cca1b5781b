"""How a run's verdict follows objectives, blocking checks, findings, errors and interrupts."""

from __future__ import annotations

from pathlib import Path

import pytest

from firedrill.drills.base import DrillRun, Objectives
from firedrill.errors import DeadlineExceeded, TargetError
from firedrill.evidence import Measurements, load_evidence
from firedrill.run_context import RunContext


def _run(tmp_path: Path, **objectives: float) -> DrillRun:
    return DrillRun(
        drill="unit",
        scenario="verdict",
        ctx=RunContext(via="test", out_root=tmp_path),
        objectives=Objectives(**objectives),  # type: ignore[arg-type]
    )


def test_met_objectives_and_passed_checks_pass(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.check("data", True)
    record = run.finish(Measurements(), {"rto": 1.0, "rpo": 0.0})
    assert record.verdict == "passed"
    assert load_evidence(tmp_path / run.run_id / "evidence.json") == record


def test_a_finding_is_shown_but_does_not_fail(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.check("loss within the RPO", False, "3 lost", blocking=False)
    record = run.finish(Measurements(), {"rto": 1.0, "rpo": 2.0})
    assert record.verdict == "passed"
    assert [c.name for c in record.checks if not c.passed] == ["loss within the RPO"]
    html = (tmp_path / run.run_id / "report.html").read_text()
    assert "finding" in html


def test_a_failed_blocking_check_fails(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.check("every acknowledged write present", False)
    assert run.finish(Measurements(), {"rto": 1.0, "rpo": 0.0}).verdict == "failed"


@pytest.mark.parametrize(("value", "verdict"), [(901.0, "failed"), (None, "failed"), (899.0, "passed")])
def test_rto_objective_decides(tmp_path: Path, value: float | None, verdict: str) -> None:
    run = _run(tmp_path, rto_s=900.0)
    assert run.finish(Measurements(), {"rto": value, "rpo": 0.0}).verdict == verdict


def test_errors_and_interrupts(tmp_path: Path) -> None:
    broken = _run(tmp_path)
    broken.record_failure(TargetError("standby unreachable"))
    record = broken.finish(Measurements(), {"rto": 1.0, "rpo": 0.0})
    assert record.verdict == "error" and record.error == "standby unreachable"
    late = _run(tmp_path)
    late.record_failure(DeadlineExceeded("no recovery within 120 s"))
    assert late.finish(Measurements(), {}).verdict == "aborted"
    cut = _run(tmp_path)
    cut.record_failure(KeyboardInterrupt())
    assert cut.finish(Measurements(), {}).verdict == "aborted"


def test_finish_writes_once(tmp_path: Path) -> None:
    run = _run(tmp_path)
    first = run.finish(Measurements(), {"rto": 1.0, "rpo": 0.0})
    run.check("late check", False)
    assert run.finish(Measurements(), {"rto": 99999.0, "rpo": 0.0}) is first
