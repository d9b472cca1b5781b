"""The same feature files run against an AWS profile: @local scenarios skipped, the @aws one run.

A child `pytest features/ --env aws-test` runs the appended "RDS Multi-AZ forced failover" scenario
through the real steps, drill and evidence; tests/aws/feature_plugin.py scripts what moto cannot do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.aws.conftest import aws_profile, write_config

ROOT = Path(__file__).resolve().parents[2]


def _pytest(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "features/", "-p", "no:cacheprovider", "-q", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_rds_scenario_of_the_failover_feature_runs_end_to_end(settings_for: Any, tmp_path: Path) -> None:
    from firedrill.staging.postgres import DATABASE, SUPERUSER

    settings = settings_for(
        rds={"db_instance_id": "orders", "dbname": DATABASE, "user": SUPERUSER, "sslmode": "disable"}
    )
    cfg = write_config(tmp_path / "firedrill.toml", aws_profile(settings, name="aws-test"))
    out = tmp_path / "out"
    proc = _pytest(
        [
            "--env",
            "aws-test",
            "--firedrill-config",
            str(cfg),
            "--firedrill-out",
            str(out),
            "-p",
            "tests.aws.feature_plugin",
            "-rs",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout and "skipped" in proc.stdout
    assert "needs the local staging (@local)" in proc.stdout
    (evidence,) = out.glob("*/evidence.json")
    record = json.loads(evidence.read_text())
    assert record["scenario"] == "RDS Multi-AZ forced failover"
    assert record["verdict"] == "passed" and record["fault"] == "reboot-failover"
    assert record["environment"]["kind"] == "aws" and record["environment"]["name"] == "aws-test"
    assert record["measurements"]["lost_writes"] == 0
    assert record["measurements"]["outage_seen"] is True
    details = " ".join(e["detail"] for e in record["timeline"])
    assert "writer AZ eu-west-1a -> eu-west-1b" in details


def test_the_example_aws_profile_skips_every_local_scenario(tmp_path: Path) -> None:
    proc = _pytest(
        ["--env", "aws-staging", "--firedrill-config", "examples/firedrill.toml", "-m", "not aws", "-rs"],
        tmp_path,
    )
    assert proc.returncode in (0, 5), proc.stdout[-3000:]
    assert " passed" not in proc.stdout and "failed" not in proc.stdout
    assert "skipped" in proc.stdout and "needs the local staging (@local)" in proc.stdout
