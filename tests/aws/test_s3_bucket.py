"""The S3 restore drill's AWS side against moto in server mode: the guardrails (account, the bucket's
non-production tag), the readiness checks a bucket must pass, the plan, the @aws scenario through the
real steps, and a Ctrl-C that still deletes the drill's prefix. Replication status is scripted with
botocore's Stubber: moto never sets one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import ANY, Stubber

from firedrill.aws.session import AwsSession
from firedrill.drills.base import DrillRun
from firedrill.drills.plan import make_plan
from firedrill.drills.s3_restore import CHECK_REPLICATION, Refusal, S3Objectives, S3RestoreDrill, refused_name
from firedrill.errors import ConfigError, GuardrailError
from firedrill.run_context import RunContext
from firedrill.targets.factory import open_bucket_target
from firedrill.targets.s3_bucket import connect_s3_bucket
from tests.aws.conftest import REGION, aws_profile, recording_session, run_cli, write_config
from tests.aws.resources import PRODUCTION, STAGING

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "backups-staging"
S3 = {"bucket": BUCKET, "prefix": "backups", "retention_days": 30}
OUTSIDE = "backups/platform/db-2026-12-01.dump"
READ_ONLY = ("List", "Get")  # GetCallerIdentity, GetBucket*, ListObjectVersions


def s3_client(moto_url: str) -> Any:
    return boto3.session.Session(region_name=REGION).client(
        "s3", endpoint_url=moto_url, config=Config(s3={"addressing_style": "path"})
    )


def make_bucket(
    moto_url: str,
    *,
    tags: list[dict[str, str]] | None = STAGING,
    versioning: bool = True,
    noncurrent_days: int | None = 35,
) -> Any:
    s3 = s3_client(moto_url)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    if tags is not None:
        s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": tags})
    if versioning:
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    if noncurrent_days is not None:
        rule = {"ID": "keep", "Status": "Enabled", "Filter": {"Prefix": "backups/"}}
        rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": noncurrent_days}
        s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [rule]})
    s3.put_object(Bucket=BUCKET, Key=OUTSIDE, Body=b"the platform's own backup")
    return s3


def _everything(s3: Any) -> list[tuple[str, str]]:
    page = s3.list_object_versions(Bucket=BUCKET)
    return sorted(
        (r["Key"], r["VersionId"]) for r in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
    )


def _drill(session: AwsSession, tmp_path: Path, **objectives: Any) -> S3RestoreDrill:
    run = DrillRun(
        drill="s3-restore",
        scenario="aws test",
        ctx=RunContext(environment="aws-test", via="test", out_root=tmp_path / "out"),
        objectives=S3Objectives(**objectives),
    )
    return S3RestoreDrill(connect_s3_bucket(session), run)


# ---- guardrails ------------------------------------------------------------------------------------
def test_the_wrong_account_is_refused_before_any_s3_call(moto_url: str, settings_for: Any) -> None:
    make_bucket(moto_url)
    session, calls = recording_session(settings_for(account_ids=["111122223333"], s3=S3))
    with pytest.raises(GuardrailError, match=r"^refused: AWS account 123456789012 .* nothing was changed$"):
        connect_s3_bucket(session)
    assert calls == ["GetCallerIdentity"]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (PRODUCTION, r"S3 bucket backups-staging is tagged environment=production \(production\)"),
        (None, r"S3 bucket backups-staging has no 'environment' tag \(needs environment=staging\|drill\)"),
    ],
)
def test_a_bucket_without_the_non_production_tag_is_refused(
    moto_url: str, settings_for: Any, tags: list[dict[str, str]] | None, expected: str
) -> None:
    s3 = make_bucket(moto_url, tags=tags)
    before = _everything(s3)
    with (
        pytest.raises(GuardrailError, match=rf"^refused: {expected}; nothing was changed$"),
        open_bucket_target(aws_profile(settings_for(s3=S3))),
    ):
        pytest.fail("the bucket must not open")
    assert _everything(s3) == before


def test_a_profile_without_an_s3_section_names_it(settings_for: Any) -> None:
    with pytest.raises(ConfigError, match=r"no \[s3\] part"), open_bucket_target(aws_profile(settings_for())):
        pytest.fail("no bucket to open")


# ---- readiness -------------------------------------------------------------------------------------
def test_lifecycle_rules_expiring_noncurrent_versions_early_refuse_the_bucket(
    moto_url: str, settings_for: Any, tmp_path: Path
) -> None:
    s3 = make_bucket(moto_url, noncurrent_days=7)
    drill = _drill(AwsSession(settings_for(s3=S3)), tmp_path, expect_refusal=Refusal.RETENTION)
    drill.open()
    drill.write_objects(3, 1024)
    record = drill.conclude()
    checks = {c.name: c for c in record.checks}
    assert record.verdict == "passed"
    assert checks[refused_name(Refusal.RETENTION)].passed
    retention = checks["noncurrent versions are kept at least 30 days"]
    assert not retention.passed and "keep (prefix 'backups/'): NoncurrentDays 7" in retention.detail
    assert _everything(s3) == [(OUTSIDE, _everything(s3)[0][1])]  # nothing of the drill's is left


@pytest.mark.parametrize(("status", "healthy"), [("FAILED", False), ("PENDING", True), (None, False)])
def test_replication_must_be_configured_and_a_probe_object_not_failed(
    moto_url: str, settings_for: Any, tmp_path: Path, status: str | None, healthy: bool
) -> None:
    make_bucket(moto_url)
    session = AwsSession(settings_for(s3={**S3, "replication": True}))
    drill = _drill(session, tmp_path)
    client = drill.target.s3  # type: ignore[attr-defined]
    bucket = {"Bucket": BUCKET}
    rule = {"ID": "dr", "Status": "Enabled", "Priority": 1, "Filter": {"Prefix": "backups/"}}
    rule["Destination"] = {"Bucket": "arn:aws:s3:::backups-replica"}
    head: dict[str, Any] = {"ContentLength": 28}
    if status:
        head["ReplicationStatus"] = status
    with Stubber(client) as stub:  # moto keeps the configuration but never replicates
        stub.add_response("list_object_versions", {}, {**bucket, "Prefix": ANY, "MaxKeys": 1})
        stub.add_response("get_bucket_versioning", {"Status": "Enabled"}, bucket)
        stub.add_response("get_bucket_lifecycle_configuration", {"Rules": []}, bucket)
        repl = {"ReplicationConfiguration": {"Role": "arn:aws:iam::123456789012:role/r", "Rules": [rule]}}
        stub.add_response("get_bucket_replication", repl, bucket)
        stub.add_response("put_object", {"VersionId": "p1"}, {**bucket, "Key": ANY, "Body": ANY})
        for _ in range(1 if status == "FAILED" else 20):  # PENDING / none: polled until the deadline
            stub.add_response("head_object", head, {**bucket, "Key": ANY})
        drill.settings = type(drill.settings)(replication_timeout_s=0.05)
        drill.open()
    check = next(c for c in drill.run.checks if c.name == CHECK_REPLICATION)
    assert check.passed is healthy, check.detail
    assert drill.ready is healthy
    assert drill.conclude().verdict in ("passed", "failed")


# ---- plan ------------------------------------------------------------------------------------------
def test_plan_lists_the_changes_and_calls_only_read_only_apis(moto_url: str, settings_for: Any) -> None:
    s3 = make_bucket(moto_url)
    before = _everything(s3)
    session, calls = recording_session(settings_for(s3=S3))
    text = make_plan("s3-restore", aws_profile(settings_for(s3=S3)), session).render()
    assert calls[0] == "GetCallerIdentity" and all(c.startswith(READ_ONLY) for c in calls), calls
    assert "GetBucketTagging" in calls
    assert _everything(s3) == before
    assert "ok  S3 bucket backups-staging: tagged environment=staging" in text
    assert "ok  ok  versioning is enabled: Status=Enabled" in text
    assert "ok  ok  noncurrent versions kept 30 days: keep (prefix 'backups/'): NoncurrentDays 35" in text
    assert "[aws] s3:PutObject s3://backups-staging/backups/firedrill-drill/<run id>/data/" in text
    assert (
        "[aws] s3:DeleteObjectVersion s3://backups-staging/backups/firedrill-drill/<run id>/: every" in text
    )
    assert text.splitlines()[-1] == "nothing was changed (plan only)"


def test_cli_plan(
    moto_url: str, settings_for: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_bucket(moto_url)
    cfg = write_config(tmp_path / "firedrill.toml", aws_profile(settings_for(s3=S3), name="aws-staging"))
    code, out, err = run_cli(["plan", "s3-restore", "--env", "aws-staging", "--config", str(cfg)], capsys)
    assert code == 0, err
    assert "plan for drill 's3-restore' in environment 'aws-staging'" in out


# ---- the @aws scenario through the real steps ------------------------------------------------------
def _pytest(cfg: Path, out: Path) -> subprocess.Popen[str]:
    args = ["features/s3_restore.feature", "-p", "no:cacheprovider", "-q", "-rs", "--env", "aws-test"]
    args += ["--firedrill-config", str(cfg), "--firedrill-out", str(out)]
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_the_aws_scenario_runs_end_to_end(moto_url: str, settings_for: Any, tmp_path: Path) -> None:
    s3 = make_bucket(moto_url)
    before = _everything(s3)
    cfg = write_config(tmp_path / "firedrill.toml", aws_profile(settings_for(s3=S3)))
    child = _pytest(cfg, tmp_path / "out")
    output, _ = child.communicate(timeout=120)
    assert child.returncode == 0, output[-3000:]
    assert "1 passed" in output and "needs the local staging (@local)" in output
    (evidence,) = (tmp_path / "out").glob("*/evidence.json")
    record = json.loads(evidence.read_text())
    assert record["verdict"] == "passed" and record["environment"]["kind"] == "aws"
    assert record["measurements"]["extra"]["objects_restored"] == 5
    assert record["environment"]["settings"]["account"] == "123456789012"
    assert _everything(s3) == before  # the drill's prefix is gone, the platform's object untouched


def test_ctrl_c_during_the_aws_scenario_still_deletes_the_drill_prefix(
    moto_url: str, settings_for: Any, tmp_path: Path
) -> None:
    s3 = make_bucket(moto_url)
    before = _everything(s3)
    cfg = write_config(tmp_path / "firedrill.toml", aws_profile(settings_for(s3=S3)))
    child = _pytest(cfg, tmp_path / "out")
    deadline = time.monotonic() + 60
    while len(_everything(s3)) < 10:  # the drill has written part of its objects
        assert child.poll() is None and time.monotonic() < deadline, "the drill never wrote"
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    output, _ = child.communicate(timeout=60)
    assert child.returncode != 0
    (evidence,) = (tmp_path / "out").glob("*/evidence.json")
    record = json.loads(evidence.read_text())
    assert record["verdict"] == "aborted", output[-2000:]
    cleanup = next(c for c in record["checks"] if c["name"].startswith("drill prefix deleted"))
    assert cleanup["passed"], cleanup
    assert _everything(s3) == before


def test_an_aws_profile_without_a_bucket_skips_the_aws_scenario(settings_for: Any, tmp_path: Path) -> None:
    """An AWS profile made for the database drills does not fail `firedrill run all` on S3."""
    cfg = write_config(tmp_path / "firedrill.toml", aws_profile(settings_for()))
    child = _pytest(cfg, tmp_path / "out")
    output, _ = child.communicate(timeout=120)
    assert child.returncode in (0, 5), output[-3000:]
    assert "needs a [profiles.aws-test.aws.s3] section (bucket, prefix)" in output
    assert " passed" not in output and not list((tmp_path / "out").glob("*/evidence.json"))
