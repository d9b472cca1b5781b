"""Profile section for an existing Redis Sentinel deployment (`kind = "sentinel"`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from firedrill.config_ha import Command, PasswordRef, looks_like_production


def parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{value!r} is not host:port")
    return host, int(port)


class SentinelDeploymentSettings(BaseModel):
    """`[profiles.<name>.sentinel]`: Sentinels someone else runs and the master they watch.

    `SENTINEL FAILOVER` needs no host access; kill / freeze run only the commands named here, as
    argument lists, with `{node}` replaced by the master's `host:port`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    sentinels: tuple[str, ...] = Field(min_length=1)  # "host:port" of each Sentinel
    master_name: str = Field(min_length=1)
    allowed_masters: tuple[str, ...] = Field(min_length=1)  # master names this profile may drill
    password: PasswordRef | None = None  # AUTH of the data nodes
    sentinel_password: PasswordRef | None = None
    kill_command: Command = ()
    start_command: Command = ()
    freeze_command: Command = ()
    thaw_command: Command = ()
    command_timeout_s: float = Field(30.0, gt=0, le=600)
    lease_ttl_s: float = Field(120.0, ge=1, le=3600)  # one drill at a time: a key with a PX TTL

    @field_validator("sentinels")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for v in value:
            parse_address(v)
        return value

    @field_validator("allowed_masters")
    @classmethod
    def _not_production(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if looks_like_production(v)]
        if bad:
            raise ValueError(f"a production master cannot be allowed: {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _pairs(self) -> SentinelDeploymentSettings:
        if bool(self.freeze_command) != bool(self.thaw_command):
            raise ValueError("freeze_command and thaw_command go together")
        if self.kill_command and not self.start_command:
            raise ValueError("kill_command needs a start_command, to bring the node back afterwards")
        return self

    def addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(parse_address(v) for v in self.sentinels)
