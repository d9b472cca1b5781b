"""Profiles, secrets by reference, botocore errors as one line with the AWS code, waits with deadlines."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from firedrill.aws.errors import aws_call, translate
from firedrill.aws.guardrails import check_account
from firedrill.aws.session import AwsSession, WaitPolicy, parse_endpoint, wait_for
from firedrill.config import SecretRef, get_profile, load_profiles
from firedrill.errors import ConfigError, DeadlineExceeded, TargetError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "firedrill.toml"


def test_client_errors_keep_the_aws_code_and_say_what_to_do() -> None:
    exc = ClientError(
        {"Error": {"Code": "InvalidDBInstanceState", "Message": "Instance orders is not\navailable."}},
        "RebootDBInstance",
    )
    err = translate(exc, "rds:RebootDBInstance", "orders")
    assert isinstance(err, TargetError) and err.code == "InvalidDBInstanceState"
    assert str(err) == (
        "rds:RebootDBInstance on orders failed: Instance orders is not available. (InvalidDBInstanceState); "
        "the instance is busy (modifying, backing up, rebooting): retry when available"
    )
    denied = translate(ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "X"), "rds:X")
    assert isinstance(denied, TargetError) and denied.code == "AccessDenied"
    assert "iam/firedrill-drill-policy.json" in str(denied)


def test_no_credentials_is_one_line_naming_the_chain(
    settings_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(TargetError) as caught:
        check_account(AwsSession(settings_for()))
    assert caught.value.code == "NoCredentialsError"
    assert str(caught.value).startswith(
        "sts:GetCallerIdentity: no usable AWS credentials (the standard boto3 chain"
    )
    assert "\n" not in str(caught.value)


def test_unreachable_endpoint_is_one_line_with_the_code(settings_for: Any) -> None:
    session = AwsSession(settings_for(endpoint_url="http://127.0.0.1:9"))  # discard port: nothing listens
    with pytest.raises(TargetError) as caught:
        check_account(session)
    assert caught.value.code == "EndpointConnectionError"
    assert str(caught.value).startswith("sts:GetCallerIdentity: cannot reach the AWS endpoint")


def test_not_found_keeps_the_code(session_for: Any) -> None:
    session: AwsSession = session_for()
    with pytest.raises(TargetError) as caught, aws_call("rds:DescribeDBInstances", "nosuch"):
        session.rds().describe_db_instances(DBInstanceIdentifier="nosuch")
    assert caught.value.code == "DBInstanceNotFound"
    assert "check db_instance_id and region in the profile" in str(caught.value)


def test_secrets_resolve_from_env_and_secrets_manager_and_errors_never_show_values(
    session_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    session: AwsSession = session_for()
    sm = session.secretsmanager()
    sm.create_secret(
        Name="firedrill/orders", SecretString=json.dumps({"username": "u", "password": "pw-json-1"})
    )
    sm.create_secret(Name="firedrill/plain", SecretString="pw-plain-2")
    monkeypatch.setenv("FD_TEST_PW", "pw-env-3")
    assert session.resolve_secret(SecretRef(secret_id="firedrill/orders"), "db") == "pw-json-1"
    assert session.resolve_secret(SecretRef(secret_id="firedrill/plain"), "db") == "pw-plain-2"
    assert session.resolve_secret(SecretRef(env="FD_TEST_PW"), "db") == "pw-env-3"
    with pytest.raises(ConfigError, match=r"^db: secret firedrill/orders has no string key 'token'$"):
        session.resolve_secret(SecretRef(secret_id="firedrill/orders", json_key="token"), "db")
    with pytest.raises(ConfigError, match=r"^db: environment variable FD_TEST_UNSET is not set$"):
        session.resolve_secret(SecretRef(env="FD_TEST_UNSET"), "db")
    with pytest.raises(
        TargetError, match=r"secretsmanager:GetSecretValue on firedrill/none failed"
    ) as caught:
        session.resolve_secret(SecretRef(secret_id="firedrill/none"), "db")
    assert caught.value.code == "ResourceNotFoundException"
    assert SecretRef(secret_id="firedrill/orders").reference() == "secretsmanager:firedrill/orders#password"
    with pytest.raises(ValueError, match="exactly one of env"):
        SecretRef(env="A", secret_id="b")


def test_wait_for_logs_progress_and_stops_at_its_deadline(caplog: pytest.LogCaptureFixture) -> None:
    states = iter(["creating", "creating", "backing-up"] + ["modifying"] * 1000)
    caplog.set_level(logging.INFO)
    with pytest.raises(
        DeadlineExceeded, match=r"^restore x: still status=modifying after 0.2 s \(deadline\)$"
    ):
        wait_for("restore x", lambda: (False, f"status={next(states)}"), WaitPolicy(0.01, 0.2))
    logged = [r.getMessage() for r in caplog.records]
    assert logged[:3] == [
        "restore x: status=creating (0 s)",
        "restore x: status=backing-up (0 s)",
        "restore x: status=modifying (0 s)",
    ]
    status, waited = wait_for("ok", lambda: (True, "available"), WaitPolicy(1, 5))
    assert status == "available" and waited < 1
    assert WaitPolicy(10, 900).waiter_config() == {"Delay": 10, "MaxAttempts": 90}


def test_endpoint_overrides_parse() -> None:
    assert parse_endpoint("db.internal", 5432) == ("db.internal", 5432)
    assert parse_endpoint("localhost:15432", 5432) == ("localhost", 15432)
    with pytest.raises(ConfigError, match="is not host or host:port"):
        parse_endpoint("db:port", 5432)


def test_example_profile_is_valid_and_holds_no_secret() -> None:
    profile = get_profile("aws-staging", EXAMPLE)
    assert profile.kind == "aws" and profile.aws is not None
    assert profile.aws.account_ids == ("111122223333",)
    assert profile.aws.rds is not None and profile.aws.rds.db_instance_id == "orders-staging"
    assert profile.aws.rds.password == SecretRef(secret_id="firedrill/orders-staging")
    assert profile.aws.elasticache is not None and profile.aws.elasticache.auth_token == SecretRef(
        env="FIREDRILL_REDIS_AUTH"
    )
    text = EXAMPLE.read_text()
    assert "AKIA" not in text and "aws_secret_access_key" not in text.lower()


def test_aws_kind_needs_its_section_and_local_is_unchanged(tmp_path: Path) -> None:
    cfg = tmp_path / "firedrill.toml"
    cfg.write_text('[profiles.x]\nkind = "aws"\n')
    with pytest.raises(ConfigError, match=r"firedrill.toml: aws: Value error, kind = 'aws' needs an"):
        load_profiles(cfg)
    cfg.write_text(
        '[profiles.x]\nkind = "aws"\n[profiles.x.aws]\nregion = "eu-west-1"\naccount_ids = ["12345"]\n'
    )
    with pytest.raises(ConfigError, match=r"aws.account_ids.0: String should match pattern"):
        load_profiles(cfg)
    assert get_profile("local").aws is None and get_profile("local").kind == "local"
