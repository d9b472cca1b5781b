"""The orphan sweeper deletes firedrill's expired temporaries, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from firedrill.aws.cleanup import delete_temporary_instance, sweep
from firedrill.aws.guardrails import temp_tags
from firedrill.aws.session import AwsSession
from firedrill.errors import GuardrailError
from tests.aws.conftest import aws_profile, run_cli, write_config
from tests.aws.resources import PRODUCTION, STAGING, create_instance


def _instances(session: AwsSession) -> dict[str, str]:
    rows = session.rds().describe_db_instances()["DBInstances"]
    return {r["DBInstanceIdentifier"]: r["DBInstanceStatus"] for r in rows}


@pytest.fixture
def estate(session_for: Any) -> AwsSession:
    """Firedrill temporaries (expired, fresh, production-tagged) among look-alikes that are not."""
    session: AwsSession = session_for()
    rds, now = session.rds(), datetime.now(UTC)
    settings = session.settings

    def temp(iid: str, expires: datetime, extra: list[dict[str, str]] | None = None) -> None:
        tags = temp_tags(settings, f"run-{iid}", "pitr-restore", expires)
        if extra is not None:
            tags = [t for t in tags if t["Key"] != "environment"] + extra
        create_instance(rds, iid, tags=tags, multi_az=False)

    temp("firedrill-old", now - timedelta(hours=1))
    temp("firedrill-fresh", now + timedelta(hours=5))
    temp("firedrill-prod", now - timedelta(hours=1), PRODUCTION)
    create_instance(rds, "orders")  # the drilled database: staging-tagged, not firedrill's
    create_instance(rds, "firedrill-lookalike", tags=STAGING)  # the prefix alone is not enough
    create_instance(  # firedrill's tags on a foreign id are not enough either
        rds, "team-db", tags=temp_tags(settings, "run-x", "pitr-restore", now - timedelta(days=1))
    )
    return session


def test_sweep_deletes_only_expired_firedrill_temporaries(estate: AwsSession) -> None:
    result = sweep(estate)
    assert result.deleted == ["firedrill-old deletion started"]
    assert {f.instance_id for f in result.found} == {"firedrill-old", "firedrill-fresh", "firedrill-prod"}
    kept = "\n".join(result.kept)
    assert "firedrill-fresh (run run-firedrill-fresh" in kept and "not expired" in kept
    assert "firedrill-prod" in kept and "environment=production (production)" in kept
    left = _instances(estate)
    assert "firedrill-old" not in left
    assert {"orders", "firedrill-lookalike", "team-db", "firedrill-fresh", "firedrill-prod"} <= set(left)


def test_sweep_all_includes_unexpired_but_never_production(estate: AwsSession) -> None:
    result = sweep(estate, include_unexpired=True)
    assert sorted(result.deleted) == ["firedrill-fresh deletion started", "firedrill-old deletion started"]
    assert set(_instances(estate)) == {"orders", "firedrill-lookalike", "team-db", "firedrill-prod"}


def test_dry_run_deletes_nothing(estate: AwsSession) -> None:
    before = _instances(estate)
    result = sweep(estate, include_unexpired=True, dry_run=True)
    assert result.deleted == []
    assert sum("would be deleted (dry run)" in k for k in result.kept) == 2
    assert _instances(estate) == before


def test_direct_delete_refuses_anything_firedrill_did_not_create(estate: AwsSession) -> None:
    for iid in ("orders", "firedrill-lookalike", "team-db"):
        with pytest.raises(GuardrailError, match=rf"^refused: {iid} is not a firedrill temporary instance"):
            delete_temporary_instance(estate, iid)
    assert delete_temporary_instance(estate, "firedrill-gone") == "firedrill-gone already gone"
    assert {"orders", "firedrill-lookalike", "team-db"} <= set(_instances(estate))


def test_cli_cleanup(estate: AwsSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "firedrill.toml", aws_profile(estate.settings))
    code, out, err = run_cli(["aws", "cleanup", "--env", "aws-test", "--config", str(cfg)], capsys)
    assert code == 0, err
    assert "account 123456789012, region eu-west-1" in out
    assert "deleted  firedrill-old deletion started" in out
    assert "3 temporary resource(s) found, 1 deleted, 2 kept" in out
    assert "firedrill-old" not in _instances(estate)


def test_cli_cleanup_in_a_wrong_account_is_one_line_and_exit_2(
    estate: AwsSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = estate.settings.model_copy(update={"account_ids": ("999999999999",)})
    cfg = write_config(tmp_path / "firedrill.toml", aws_profile(settings))
    code, out, err = run_cli(["aws", "cleanup", "--env", "aws-test", "--config", str(cfg), "--all"], capsys)
    assert out == ""
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("firedrill: error: refused: AWS account 123456789012")
    assert "firedrill-old" in _instances(estate)
