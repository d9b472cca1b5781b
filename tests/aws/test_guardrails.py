"""Guardrails refuse before any change: the wrong account, a production-tagged or untagged resource."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from firedrill.aws.guardrails import check_tags
from firedrill.aws.session import AwsSession
from firedrill.config import AwsSettings
from firedrill.errors import ConfigError, GuardrailError
from firedrill.targets.aws_rds import connect_rds
from firedrill.targets.factory import open_target
from tests.aws.conftest import aws_profile, recording_session
from tests.aws.resources import PRODUCTION, create_aurora, create_instance

RDS = {"db_instance_id": "orders", "dbname": "app", "user": "firedrill", "sslmode": "disable"}
READ_ONLY_PREFIXES = ("Describe", "List", "Get")


def test_wrong_account_is_refused_before_any_other_call(settings_for: Any, session_for: Any) -> None:
    create_instance(session_for().rds(), "orders")
    settings: AwsSettings = settings_for(account_ids=["999999999999"], rds=RDS)
    session, calls = recording_session(settings)
    with pytest.raises(GuardrailError) as caught:
        connect_rds(session)
    message = str(caught.value)
    assert message.startswith("refused: AWS account 123456789012 (arn:aws:sts::123456789012:")
    assert message.endswith("is not one of this profile's account_ids (999999999999); nothing was changed")
    assert "\n" not in message
    assert calls == ["GetCallerIdentity"]  # not even a Describe: the account comes first


def test_wrong_account_through_the_factory_as_the_feature_fixture_opens_it(settings_for: Any) -> None:
    profile = aws_profile(settings_for(account_ids=["999999999999"], rds=RDS))
    with (
        pytest.raises(GuardrailError, match=r"^refused: AWS account 123456789012"),
        open_target("postgres", profile),
    ):
        pytest.fail("the target must not open")


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (PRODUCTION, r"is tagged environment=production \(production\)"),
        ([{"Key": "environment", "Value": "Prod"}], r"is tagged environment=Prod \(production\)"),
        ([], r"has no 'environment' tag \(needs environment=staging\|drill\)"),
        (
            [{"Key": "environment", "Value": "qa"}],
            r"is tagged environment=qa, not an allowed non-production value",
        ),
    ],
)
def test_a_resource_without_an_allowed_non_production_tag_is_refused(
    settings_for: Any, session_for: Any, tags: list[dict[str, str]], expected: str
) -> None:
    create_instance(session_for().rds(), "orders", tags=tags)
    session, calls = recording_session(settings_for(rds=RDS))
    with pytest.raises(
        GuardrailError, match=rf"^refused: RDS DB instance orders {expected}.*nothing was changed$"
    ):
        connect_rds(session)
    assert calls[0] == "GetCallerIdentity"
    assert all(c.startswith(READ_ONLY_PREFIXES) for c in calls), calls
    status = session_for().rds().describe_db_instances(DBInstanceIdentifier="orders")["DBInstances"][0]
    assert status["DBInstanceStatus"] == "available"


def test_aurora_member_tagged_production_is_refused(settings_for: Any, session_for: Any) -> None:
    create_aurora(session_for().rds(), "ledger", member_tags=PRODUCTION)
    settings = settings_for(rds={**RDS, "db_instance_id": None, "db_cluster_id": "ledger"})
    with pytest.raises(
        GuardrailError, match=r"^refused: RDS DB instance ledger-2 is tagged environment=production"
    ):
        connect_rds(AwsSession(settings))


def test_staging_tagged_resource_passes_and_says_which_tag(settings_for: Any, session_for: Any) -> None:
    create_instance(session_for().rds(), "orders")
    target = connect_rds(AwsSession(settings_for(rds=RDS)))
    assert target.guardrail == "environment=staging"


def test_check_tags_is_exact_about_key_and_value(settings_for: Any) -> None:
    s: AwsSettings = settings_for()
    assert check_tags(s, "x", {"environment": "drill"}) == "environment=drill"
    with pytest.raises(GuardrailError, match="has no 'environment' tag"):
        check_tags(s, "x", {"Environment": "staging"})  # AWS tag keys are case-sensitive
    with pytest.raises(GuardrailError, match="not an allowed"):
        check_tags(s, "x", {"environment": "staging "})


def test_a_profile_cannot_allow_production(tmp_path: Path) -> None:
    from firedrill.config import load_profiles

    cfg = tmp_path / "firedrill.toml"
    cfg.write_text(
        '[profiles.bad]\nkind = "aws"\n[profiles.bad.aws]\nregion = "eu-west-1"\n'
        'account_ids = ["123456789012"]\nnonprod_tag = { key = "env", allowed = ["staging", "production"] }\n'
    )
    with pytest.raises(
        ConfigError, match=r"aws.nonprod_tag.allowed: Value error, a production value cannot be allowed"
    ):
        load_profiles(cfg)
