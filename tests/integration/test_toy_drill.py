"""Adding a drill touches only its own files: a toy drill from a test-only module, registered the way
a third-party package registers one (an entry point in the `firedrill.drills` group), shows up in
`run` (and its --help), `plan`, the schedule and the period report, with no engine file changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

FIREDRILL = [sys.executable, "-m", "firedrill.cli.main"]

TOY_MODULE = '''
"""A toy drill: loses a toy and gets it back in 1.25 s, for the catalogue test."""

from __future__ import annotations

from pathlib import Path

from pytest_bdd import given

from firedrill.catalogue import DrillSpec, LocalPlan
from firedrill.drills.base import DrillRun
from firedrill.evidence import EvidenceRecord, Measurements
from firedrill.steps.holder import DrillHolder

SPEC = DrillSpec(
    name="toy",
    summary="a toy drill from a test-only module",
    feature=Path(__file__).with_name("toy.feature"),
    category="backup",
    stores=("toy",),
    steps=("toy_drill",),
    local_plan=LocalPlan(starts="a toy box", faults="loses one toy and finds it"),
)


class ToyDrill:
    def __init__(self, run: DrillRun) -> None:
        self.run = run

    def conclude(self) -> EvidenceRecord:
        measured = Measurements(rto_s=1.25, rpo_window_s=0.0, outage_seen=True, recovered=True)
        return self.run.finish(measured, {"rto": 1.25, "rpo": 0.0})


@given("a toy box that loses a toy and finds it again")
def toy_box(holder: DrillHolder) -> None:
    """The toy drill's whole procedure."""
    holder.drill = ToyDrill(
        DrillRun(drill="toy", scenario=holder.scenario, ctx=holder.ctx, objectives=holder.objectives)
    )
'''

TOY_FEATURE = """\
Feature: Toys come back

  Scenario: A toy is lost and found
    Given a toy box that loses a toy and finds it again
    Then writes succeed again within 15 minutes
    And at most 5 minutes of acknowledged writes are lost
"""


@pytest.fixture
def toy_env(tmp_path: Path) -> dict[str, str]:
    """A directory on PYTHONPATH with the toy drill and its distribution metadata (entry point)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "toy_drill.py").write_text(TOY_MODULE)
    (site / "toy.feature").write_text(TOY_FEATURE)
    info = site / "toy_drill-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-drill\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[firedrill.drills]\ntoy = toy_drill:SPEC\n")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }


def firedrill(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FIREDRILL, *args], capture_output=True, text=True, timeout=180, cwd=cwd, env=env)


def test_a_toy_drill_is_seen_by_run_plan_schedule_and_the_period_report(
    toy_env: dict[str, str], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    help_text = firedrill(toy_env, work, "run", "--help").stdout
    assert "toy" in help_text and "a toy drill from a test-only module" in help_text

    plan = firedrill(toy_env, work, "plan", "toy", "--env", "local")
    assert plan.returncode == 0, plan.stderr
    assert "[local] start a toy box" in plan.stdout and "loses one toy and finds it" in plan.stdout

    listing = firedrill(toy_env, work, "schedule", "--list")
    assert listing.returncode == 0, listing.stderr
    assert "toy" in listing.stdout

    run = firedrill(toy_env, work, "run", "toy", "--quiet")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (evidence,) = work.glob("reports/out/*-toy-*/evidence.json")
    record = json.loads(evidence.read_text())
    assert record["drill"] == "toy" and record["verdict"] == "passed"
    assert record["measurements"]["rto_s"] == 1.25

    today = datetime.now(UTC).date().isoformat()
    period = firedrill(
        toy_env, work, "evidence-report", "--from", today, "--to", today, "--out", str(work / "period")
    )
    assert period.returncode == 0, period.stderr
    (md,) = (work / "period").glob("**/*.md")
    text = md.read_text()
    assert "toy" in text
    assert "restore-from-backup drills: toy" in text  # its catalogue category, not its name


def test_without_the_entry_point_the_toy_drill_is_unknown(tmp_path: Path) -> None:
    proc = firedrill(dict(os.environ), tmp_path, "run", "toy")
    assert proc.returncode == 2
    assert "unknown drill 'toy'" in proc.stderr
