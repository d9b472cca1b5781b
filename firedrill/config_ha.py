"""Profile sections for HA-managed PostgreSQL: the local Patroni staging (`kind = "local-ha"`) and an
existing Patroni cluster (`kind = "patroni"`).

Kept beside `firedrill.config` (which embeds them in `Profile`) so the HA settings grow here, not there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Patroni 4 silently raises smaller values to these (patroni/config.py _validate_and_adjust_timeouts),
# so a profile asking for less would measure against a TTL that is not the one in force.
PATRONI_MIN_TTL = 20
PATRONI_MIN_LOOP_WAIT = 1
PATRONI_MIN_RETRY_TIMEOUT = 3


class LocalHaSettings(BaseModel):
    """`[profiles.<name>.local_ha]`: the Patroni + etcd + HAProxy staging firedrill starts itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    nodes: int = Field(3, ge=2, le=5)
    etcd_members: int = Field(3, ge=3, le=5)  # 3+: a quorum loss leaves at least one member up
    ttl: int = Field(PATRONI_MIN_TTL, ge=PATRONI_MIN_TTL, le=300)
    loop_wait: int = Field(PATRONI_MIN_LOOP_WAIT, ge=PATRONI_MIN_LOOP_WAIT, le=60)
    retry_timeout: int = Field(PATRONI_MIN_RETRY_TIMEOUT, ge=PATRONI_MIN_RETRY_TIMEOUT, le=120)
    maximum_lag_on_failover: int = Field(1048576, ge=0)
    synchronous_mode: bool = True  # Patroni promotes only the synchronous standby: no acked write lost
    # How the probes connect: through HAProxy (checks /primary), or libpq multi-host with
    # target_session_attrs=read-write straight to the nodes.
    client: Literal["haproxy", "multi-host"] = "haproxy"

    @model_validator(mode="after")
    def _patroni_rule(self) -> LocalHaSettings:
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError(
                f"Patroni needs loop_wait + 2 * retry_timeout <= ttl "
                f"({self.loop_wait} + 2 * {self.retry_timeout} > {self.ttl})"
            )
        return self


PRODUCTION_WORDS = frozenset({"prod", "production", "live", "prd"})
NODE_PLACEHOLDER = "{node}"


def looks_like_production(value: str) -> bool:
    """'prod', 'orders-production', 'live_db' ... : any word of the value is a production word."""
    words = "".join(c if c.isalnum() else " " for c in value.lower()).split()
    return any(w in PRODUCTION_WORDS for w in words)


class PasswordRef(BaseModel):
    """Where the database password comes from: an environment variable or a file (first line).
    Never the value itself; logs and evidence show only `reference()`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PasswordRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env = 'VAR' or file = '/path'")
        return self

    def reference(self) -> str:
        return f"env:{self.env}" if self.env else f"file:{self.file}"


Command = tuple[str, ...]


class PatroniClusterSettings(BaseModel):
    """`[profiles.<name>.patroni]` (kind = "patroni"): an existing Patroni cluster someone else runs.

    Faults that need no host access go through Patroni's REST API (switchover) or firedrill's fault
    proxy in front of `dsn` (network cut). Host faults run only the commands named here, as argument
    lists (never a shell string); `{node}` in an argument becomes the Patroni member's name."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rest_urls: tuple[str, ...] = Field(min_length=1)  # each node's REST API, e.g. "http://db1:8008"
    dsn: str = Field(min_length=1)  # libpq conninfo or URL of the application endpoint, no password
    password: PasswordRef | None = None
    allowed_scopes: tuple[str, ...] = Field(min_length=1)  # the Patroni scopes this profile may drill
    kill_command: Command = ()  # e.g. ["ssh", "{node}", "sudo", "systemctl", "kill", "-s", "KILL", "patroni"]
    start_command: Command = ()  # brings a killed node back (restore topology)
    freeze_command: Command = ()
    thaw_command: Command = ()
    command_timeout_s: float = Field(30.0, gt=0, le=600)
    rest_timeout_s: float = Field(2.0, gt=0, le=60)
    lease_ttl_s: float = Field(120.0, ge=1, le=3600)  # one drill at a time: a lock row that expires

    @field_validator("rest_urls")
    @classmethod
    def _http(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [u for u in value if not u.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"REST URLs must start with http:// or https:// ({', '.join(bad)})")
        return tuple(u.rstrip("/") for u in value)

    @field_validator("dsn")
    @classmethod
    def _no_password(cls, value: str) -> str:
        try:
            params = conninfo_to_dict(value)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"not a libpq connection string: {str(exc).splitlines()[0]}") from exc
        if "password" in params:
            raise ValueError(
                "the dsn must not hold a password: use password = { env = 'VAR' } or { file = '...' }"
            )
        return value

    @field_validator("allowed_scopes")
    @classmethod
    def _not_production(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if looks_like_production(v)]
        if bad:
            raise ValueError(f"a production scope cannot be allowed: {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _pairs(self) -> PatroniClusterSettings:
        if bool(self.freeze_command) != bool(self.thaw_command):
            raise ValueError("freeze_command and thaw_command go together")
        if self.kill_command and not self.start_command:
            raise ValueError("kill_command needs a start_command, to bring the node back afterwards")
        return self
