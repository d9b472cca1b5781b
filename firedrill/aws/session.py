"""boto3 clients for a profile, the secrets it references, and the one polling loop every AWS wait uses.

Credentials come from the standard boto3 chain (environment, shared config/SSO, instance or task role);
the profile only names the region, an optional endpoint (tests point it at moto) and retry/poll settings.
Clients are created once per `AwsSession` and cached, so a test can put a `botocore.stub.Stubber` on
`session.rds()` and the adapter uses exactly that client.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar

import boto3
from botocore.config import Config

from firedrill.aws.errors import aws_call
from firedrill.config import AwsSettings, Profile, SecretRef
from firedrill.errors import ConfigError, DeadlineExceeded, HarnessError, SteadyStateNotMet

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_elasticache import ElastiCacheClient
    from mypy_boto3_fis import FISClient
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sts import STSClient

log = logging.getLogger(__name__)


class _HasLine(Protocol):
    def line(self) -> str: ...


_View = TypeVar("_View", bound=_HasLine)

USER_AGENT = "firedrill"
PROGRESS_EVERY_S = 30.0  # an unchanged status is still logged this often, so a long wait is visibly alive


@dataclass(frozen=True, slots=True)
class WaitPolicy:
    """How one wait polls: every `delay_s`, for at most `timeout_s` (the deadline)."""

    delay_s: float
    timeout_s: float

    @property
    def max_attempts(self) -> int:
        return max(1, math.ceil(self.timeout_s / self.delay_s))

    def waiter_config(self) -> dict[str, int]:
        """The same policy for a botocore waiter (whole seconds, at least 1)."""
        delay = max(1, round(self.delay_s))
        return {"Delay": delay, "MaxAttempts": max(1, math.ceil(self.timeout_s / delay))}


class AwsSession:
    def __init__(self, settings: AwsSettings, *, boto_session: boto3.Session | None = None) -> None:
        self.settings = settings
        self._boto = boto_session or boto3.Session(region_name=settings.region)
        self._config = Config(
            region_name=settings.region,
            retries={"mode": "standard", "max_attempts": settings.max_retries + 1},
            connect_timeout=5,
            read_timeout=30,
            user_agent_extra=USER_AGENT,
        )
        self._endpoint = settings.endpoint_url
        self._rds: RDSClient | None = None
        self._elasticache: ElastiCacheClient | None = None
        self._sts: STSClient | None = None
        self._secretsmanager: SecretsManagerClient | None = None
        self._fis: FISClient | None = None
        self._cloudwatch: CloudWatchClient | None = None

    @property
    def boto_session(self) -> boto3.Session:
        return self._boto

    def rds(self) -> RDSClient:
        if self._rds is None:
            self._rds = self._boto.client("rds", config=self._config, endpoint_url=self._endpoint)
        return self._rds

    def elasticache(self) -> ElastiCacheClient:
        if self._elasticache is None:
            self._elasticache = self._boto.client(
                "elasticache", config=self._config, endpoint_url=self._endpoint
            )
        return self._elasticache

    def sts(self) -> STSClient:
        if self._sts is None:
            self._sts = self._boto.client("sts", config=self._config, endpoint_url=self._endpoint)
        return self._sts

    def fis(self) -> FISClient:
        if self._fis is None:
            self._fis = self._boto.client("fis", config=self._config, endpoint_url=self._endpoint)
        return self._fis

    def cloudwatch(self) -> CloudWatchClient:
        if self._cloudwatch is None:
            self._cloudwatch = self._boto.client(
                "cloudwatch", config=self._config, endpoint_url=self._endpoint
            )
        return self._cloudwatch

    def secretsmanager(self) -> SecretsManagerClient:
        if self._secretsmanager is None:
            self._secretsmanager = self._boto.client(
                "secretsmanager", config=self._config, endpoint_url=self._endpoint
            )
        return self._secretsmanager

    # ---- policies --------------------------------------------------------------------------------
    def policy(self, timeout_s: float) -> WaitPolicy:
        return WaitPolicy(delay_s=self.settings.poll_delay_s, timeout_s=timeout_s)

    @property
    def failover_wait(self) -> WaitPolicy:
        return self.policy(self.settings.failover_timeout_s)

    @property
    def delete_wait(self) -> WaitPolicy:
        return self.policy(self.settings.delete_timeout_s)

    # ---- secrets ---------------------------------------------------------------------------------
    def resolve_secret(self, ref: SecretRef, what: str) -> str:
        """The value a reference points at. Errors name the reference, never a value."""
        if ref.env is not None:
            value = os.environ.get(ref.env)
            if not value:
                raise ConfigError(f"{what}: environment variable {ref.env} is not set")
            return value
        assert ref.secret_id is not None  # the model guarantees one of the two
        with aws_call("secretsmanager:GetSecretValue", ref.secret_id):
            raw = self.secretsmanager().get_secret_value(SecretId=ref.secret_id).get("SecretString")
        if not raw:
            raise ConfigError(f"{what}: secret {ref.secret_id} has no SecretString")
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            return raw
        if not isinstance(parsed, dict):
            return raw
        value = parsed.get(ref.json_key)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{what}: secret {ref.secret_id} has no string key '{ref.json_key}'")
        return value


def wait_for(
    what: str,
    poll: Callable[[], tuple[bool, str]],
    policy: WaitPolicy,
    *,
    logger: logging.Logger = log,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, float]:
    """Poll until `poll()` says done; log each new status (and every 30 s an unchanged one).

    Returns the last status and the seconds waited. Raises DeadlineExceeded once `policy.timeout_s`
    has passed without `done`, naming what was awaited and the last status seen.
    """
    start = time.monotonic()
    deadline = start + policy.timeout_s
    last: str | None = None
    last_logged = start
    while True:
        done, status = poll()
        now = time.monotonic()
        elapsed = now - start
        if status != last or now - last_logged >= PROGRESS_EVERY_S:
            logger.info("%s: %s (%.0f s)", what, status, elapsed)
            last, last_logged = status, now
        if done:
            return status, elapsed
        if now >= deadline:
            raise DeadlineExceeded(f"{what}: still {status} after {policy.timeout_s:g} s (deadline)")
        sleep(min(policy.delay_s, max(0.0, deadline - now)))


def wait_steady(
    label: str,
    observe: Callable[[], _View],
    problem: Callable[[_View], str | None],
    *,
    delay_s: float,
    timeout_s: float,
    logger: logging.Logger = log,
) -> _View:
    """Wait until the control plane shows no steady-state problem; return the last view.

    A deadline here means "not steady", so no fault may be injected: SteadyStateNotMet."""

    def poll() -> tuple[bool, str]:
        view = observe()
        found = problem(view)
        return found is None, found or view.line()

    try:
        wait_for(
            f"{label} steady state",
            poll,
            WaitPolicy(delay_s=min(delay_s, timeout_s), timeout_s=timeout_s),
            logger=logger,
        )
    except DeadlineExceeded as exc:
        raise SteadyStateNotMet(str(exc)) from exc
    return observe()


def parse_endpoint(text: str, default_port: int) -> tuple[str, int]:
    """ "host" or "host:port" (as profiles write endpoint overrides) as (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        return text.strip(), default_port
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"endpoint '{text}' is not host or host:port")
    return host, int(port)


class EventLog:
    """The vendor's event stream for one resource since a moment, fetched on each poll, each new
    message logged once. Events make a long wait readable; they never decide it, so a failure to
    read them is logged once and does not stop the drill (status polling does)."""

    def __init__(
        self,
        what: str,
        fetch: Callable[[datetime], Sequence[tuple[datetime, str]]],
        since: datetime,
        *,
        logger: logging.Logger = log,
    ) -> None:
        self._what = what
        self._fetch = fetch
        self._since = since - timedelta(seconds=60)  # the caller's clock may be behind AWS's
        self._seen: set[tuple[datetime, str]] = set()
        self._log = logger
        self._broken = False
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        if self._broken:
            return []
        try:
            events = self._fetch(self._since)
        except HarnessError as exc:
            self._broken = True
            self._log.warning("%s: events unavailable, following status only: %s", self._what, exc)
            return []
        new = []
        for when, message in sorted(events):
            if (when, message) in self._seen:
                continue
            self._seen.add((when, message))
            text = f"{when.astimezone(UTC):%H:%M:%S} {message}"
            self._log.info("%s event: %s", self._what, text)
            new.append(text)
        self.messages.extend(new)
        return new

    def matches(self, pattern: re.Pattern[str]) -> bool:
        return any(pattern.search(m) for m in self.messages)

    def summary(self, limit: int = 6) -> str:
        if not self.messages:
            return "no events"
        shown = self.messages[-limit:]
        return "; ".join(shown) + (
            f" (+{len(self.messages) - limit} earlier)" if len(self.messages) > limit else ""
        )


def aws_settings(profile: Profile) -> AwsSettings:
    if profile.aws is None:
        raise ConfigError(f"profile '{profile.name}' has no [profiles.{profile.name}.aws] section")
    return profile.aws
