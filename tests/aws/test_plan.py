"""`firedrill plan` lists every change a drill would make and makes none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from firedrill.aws.session import AwsSession
from firedrill.config import Profile
from firedrill.drills.plan import make_plan
from tests.aws.conftest import aws_profile, recording_session, run_cli, write_config
from tests.aws.resources import PRODUCTION, create_aurora, create_instance, create_replication_group

RDS = {"db_instance_id": "orders", "dbname": "app", "user": "firedrill", "password": {"env": "UNSET_PW_VAR"}}
READ_ONLY = ("Describe", "List", "GetCallerIdentity")


def _state(session: AwsSession) -> dict[str, Any]:
    """Everything a drill could change, as moto holds it."""
    look = AwsSession(session.settings)
    rds = look.rds().describe_db_instances()["DBInstances"]
    groups = look.elasticache().describe_replication_groups()["ReplicationGroups"]
    return {
        "instances": sorted(
            (r["DBInstanceIdentifier"], r["DBInstanceStatus"], r.get("AvailabilityZone")) for r in rds
        ),
        "groups": sorted((g["ReplicationGroupId"], g["Status"]) for g in groups),
    }


@pytest.mark.parametrize("drill", ["failover", "pitr", "cache-failover"])
def test_plan_lists_the_changes_and_calls_only_read_only_apis(settings_for: Any, drill: str) -> None:
    settings = settings_for(
        rds=RDS, elasticache={"replication_group_id": "sessions", "auth_token": {"env": "UNSET"}}
    )
    session, calls = recording_session(settings)
    create_instance(session.rds(), "orders")
    create_replication_group(session.elasticache(), "sessions")
    before = _state(session)
    calls.clear()

    plan = make_plan(drill, aws_profile(settings), session)
    text = plan.render()

    assert calls and calls[0] == "GetCallerIdentity"
    assert all(c.startswith(READ_ONLY) for c in calls), calls
    assert "GetSecretValue" not in calls  # a plan needs no secret (and the env vars are unset)
    assert _state(session) == before
    assert text.splitlines()[-1] == "nothing was changed (plan only)"
    assert "ok  AWS account 123456789012 is allowed" in text
    expected = {
        "failover": "[aws] rds:RebootDBInstance orders: ForceFailover=True: writer eu-west-1a -> standby",
        "pitr": "[aws] rds:RestoreDBInstanceToPointInTime orders -> firedrill-run-id-1",
        "cache-failover": "[aws] elasticache:TestFailover sessions node group 0001: primary sessions-001",
    }[drill]
    assert expected in text
    if drill == "pitr":
        assert "[aws] rds:DeleteDBInstance firedrill-run-id-1: SkipFinalSnapshot" in text
        assert "ok  ok  backup retention covers the promised window: BackupRetentionPeriod 30 days" in text
    aws_changes = [c for c in plan.changes if c.kind == "aws"]
    assert aws_changes and all(":" in c.action for c in aws_changes)


def test_plan_for_aurora_names_the_reader_it_fails_over_to(settings_for: Any) -> None:
    settings = settings_for(rds={**RDS, "db_instance_id": None, "db_cluster_id": "ledger"})
    session, calls = recording_session(settings)
    create_aurora(session.rds(), "ledger")
    calls.clear()
    text = make_plan("failover", aws_profile(settings), session).render()
    assert "[aws] rds:FailoverDBCluster ledger: writer ledger-1 (eu-west-1a) -> ledger-2 (eu-west-1b)" in text
    assert all(c.startswith(READ_ONLY) for c in calls), calls


def test_plan_for_the_local_profile_touches_nothing_outside_a_temp_dir() -> None:
    text = make_plan("failover", Profile(name="local")).render()
    assert "local staging: nothing outside a temp directory is touched" in text
    assert "[aws]" not in text


def test_cli_plan(settings_for: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(rds=RDS)
    create_instance(AwsSession(settings).rds(), "orders")
    cfg = write_config(tmp_path / "firedrill.toml", aws_profile(settings, name="aws-staging"))
    code, out, err = run_cli(["plan", "failover", "--env", "aws-staging", "--config", str(cfg)], capsys)
    assert code == 0, err
    assert "plan for drill 'failover' in environment 'aws-staging'" in out
    assert "rds:RebootDBInstance orders" in out


def test_cli_plan_refuses_a_production_resource_in_one_line(
    settings_for: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(rds=RDS)
    create_instance(AwsSession(settings).rds(), "orders", tags=PRODUCTION)
    cfg = write_config(tmp_path / "firedrill.toml", aws_profile(settings))
    code, out, err = run_cli(["plan", "failover", "--env", "aws-test", "--config", str(cfg)], capsys)
    assert code == 2 and out == ""
    assert err == (
        "firedrill: error: refused: RDS DB instance orders is tagged environment=production (production); "
        "nothing was changed\n"
    )


def test_cli_plan_unknown_drill_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["plan", "nosuch", "--env", "local"], capsys)
    assert code == 2 and err.startswith("firedrill: error: ") and err.count("\n") == 1
