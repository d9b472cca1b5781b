"""moto in server mode, once per session, wiped between tests; fake credentials only.

AWS cannot be reached from here: every client points at the local moto server through the profile's
`endpoint_url`. moto does not simulate failovers; tests that need one script it with Stubber.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from firedrill.aws.session import AwsSession
from firedrill.config import AwsSettings, Profile

ACCOUNT = "123456789012"  # moto's account
REGION = "eu-west-1"

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    saved = {k: os.environ.get(k) for k in [*FAKE_ENV, "AWS_SESSION_TOKEN", "AWS_PROFILE"]}
    os.environ.update(FAKE_ENV)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(autouse=True)
def _reset_moto(moto_url: str) -> None:
    req = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def aws_settings(moto_url: str, **overrides: Any) -> AwsSettings:
    """Fast polls and short deadlines: no test waits AWS-sized intervals."""
    base: dict[str, Any] = {
        "region": REGION,
        "account_ids": [ACCOUNT],
        "endpoint_url": moto_url,
        "max_retries": 0,
        "poll_delay_s": 0.05,
        "failover_timeout_s": 20,
        "delete_timeout_s": 10,
        "nonprod_tag": {"key": "environment", "allowed": ["staging", "drill"]},
    }
    base.update(overrides)
    return AwsSettings.model_validate(base)


def aws_profile(settings: AwsSettings, name: str = "aws-test", **fields: Any) -> Profile:
    return Profile.model_validate({"name": name, "kind": "aws", "aws": settings.model_dump(), **fields})


@pytest.fixture
def settings_for(moto_url: str) -> Any:
    return lambda **kw: aws_settings(moto_url, **kw)


@pytest.fixture
def session_for(moto_url: str) -> Any:
    return lambda **kw: AwsSession(aws_settings(moto_url, **kw))


def recording_session(settings: AwsSettings) -> tuple[AwsSession, list[str]]:
    """An AwsSession whose every AWS call (operation name, in order) is recorded, on every client."""
    import boto3

    boto = boto3.Session(region_name=settings.region)
    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    boto.events.register("before-call.*.*", record)
    return AwsSession(settings, boto_session=boto), calls


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def write_config(path: Path, profile: Profile) -> Path:
    """A firedrill.toml holding `profile` (as a user would write it)."""
    body = profile.model_dump(mode="json", exclude_none=True, exclude={"name"})
    lines = [f"[profiles.{json.dumps(profile.name)}]"] + [f"{k} = {_toml_value(v)}" for k, v in body.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`firedrill ARGV` in this process: (exit code, stdout, stderr)."""
    from firedrill.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err
