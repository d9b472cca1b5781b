"""A team's own drills directory: `firedrill init`, their own feature, paths relative to where they
stand, and the one-line errors they meet. Real PostgreSQL and Redis on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from firedrill.catalogue import catalogue
from firedrill.config import load_profiles
from tests.fixtures.features import OWN_FAILOVER_FEATURE

FIREDRILL = [sys.executable, "-m", "firedrill.cli.main"]


def firedrill(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FIREDRILL, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def evidence_in(root: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("reports/out/*/evidence.json"))]


def test_init_writes_a_starter_that_parses_and_never_overwrites(tmp_path: Path) -> None:
    proc = firedrill("init", "drills", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    drills = tmp_path / "drills"
    expected = {"firedrill.toml"} | {s.feature.name for s in catalogue().values() if s.in_all}
    assert {p.name for p in drills.iterdir()} == expected
    assert "local" in load_profiles(drills / "firedrill.toml")
    # The commented AWS profile is valid once uncommented.
    text = (drills / "firedrill.toml").read_text()
    aws = "\n".join(
        ln[2:] for ln in text.splitlines() if ln.startswith("# [") or (ln.startswith("# ") and "=" in ln)
    )
    parsed = tomllib.loads(aws)
    assert parsed["profiles"]["aws-staging"]["kind"] == "aws"
    assert "aws-staging" in load_profiles(_write(tmp_path / "aws.toml", aws))
    again = firedrill("init", "drills", cwd=tmp_path)
    assert "already exists: firedrill init never overwrites" in one_line_error(again)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_starter_runs_as_it_is_and_writes_reports_where_the_user_stands(tmp_path: Path) -> None:
    assert firedrill("init", "drills", cwd=tmp_path).returncode == 0
    drills = tmp_path / "drills"
    proc = firedrill("run", "-k", "crashes and not load", "--quiet", cwd=drills)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    records = evidence_in(drills)
    assert {r["drill"] for r in records} == {"failover", "cache-failover"}
    assert all(r["verdict"] == "passed" for r in records)
    assert len(list(drills.glob("reports/out/*/report.html"))) == len(records)
    assert list(drills.glob("reports/ledger/*.json")), "the ledger goes to ./reports/ledger"


def test_own_feature_runs_with_firedrill_run_and_with_pytest(tmp_path: Path) -> None:
    feature = _write(tmp_path / "my.feature", OWN_FAILOVER_FEATURE)
    proc = firedrill("run", "my.feature", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1/1 scenarios passed" in proc.stdout
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", feature.name, "-q", "-p", "no:cacheprovider", "-m", "postgres"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 passed" in proc.stdout
    records = evidence_in(tmp_path)
    assert len(records) == 2
    for record in records:
        assert record["drill"] == "failover" and record["verdict"] == "passed"  # the procedure it ran
        assert record["scenario"] == "Our primary crashes at 200 writes a second"
        rto = next(o for o in record["objectives"] if o["name"] == "rto")  # type: ignore[union-attr]
        assert rto["limit"] == 30.0
        assert record["probe_stats"]["target_hz"] == 200.0  # type: ignore[index]
    assert {r["operator"]["via"] for r in records} == {"cli", "pytest"}  # type: ignore[index]


def test_a_relative_config_is_read_from_the_working_directory(tmp_path: Path) -> None:
    _write(tmp_path / "rel.toml", '[profiles.mine]\nkind = "local"\nprobe = { rate_hz = 120 }\n')
    args = ["run", "failover", "--env", "mine", "--config", "rel.toml", "-k", "crashes and not load"]
    proc = firedrill(*args, "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (record,) = evidence_in(tmp_path)
    assert record["environment"]["name"] == "mine"  # type: ignore[index]  (only ./rel.toml defines it)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "failover", "--out", "/proc/forbidden"], "cannot write evidence to /proc/forbidden"),
        (["run", "missing.feature"], "feature file not found: missing.feature"),
        (["run", "failover", "--config", "rel-missing.toml"], "config file not found: rel-missing.toml"),
        (["run", "typo.feature"], 'typo.feature:4: no step matches "When the primary is kiled"'),
        (["init", "/proc/forbidden/drills"], "cannot write the starter drills to /proc/forbidden/drills"),
        (["run", "failover", "-k", "behind the app"], "-k 'behind the app': not a valid scenario filter"),
    ],
)
def test_bad_input_of_a_drills_directory_is_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    _write(
        tmp_path / "typo.feature",
        "Feature: t\n  Scenario: s\n"
        "    Given a PostgreSQL primary with a streaming standby in the drill environment\n"
        "    When the primary is kiled\n",
    )
    assert needle in one_line_error(firedrill(*args, cwd=tmp_path))


def test_steps_lists_the_library(tmp_path: Path) -> None:
    proc = firedrill("steps", cwd=tmp_path)
    assert proc.returncode == 0
    assert "When the primary is killed" in proc.stdout
    assert "Then writes succeed again[{same}] within {amount} {unit}" in proc.stdout
    only = firedrill("steps", "sentinel", cwd=tmp_path).stdout
    assert "When Sentinel is asked for a planned failover" in only and "primary is killed" not in only
