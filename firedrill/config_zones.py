"""The zone outage drill's settings. `[profiles.<name>.zones]`, locally: which zone each node and the
clients live in, and the one subnet their addresses come from (`firedrill.staging.zones`).
`[profiles.<name>.aws.fis]`, on AWS: the FIS experiment that takes an Availability Zone away.

Kept beside `firedrill.config` (which embeds them in `Profile` and `AwsSettings`) so the zone settings
grow here, not there.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

ZoneName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9]{0,7}$")]
RESERVED_ZONES = frozenset({"ctl", "fabric"})
_ISO_DURATION = re.compile(r"^PT(?=\d)(\d+H)?(\d+M)?(\d+S)?$")
_MAX_FIS_DURATION_S = 12 * 3600  # what FIS itself allows an action
_AZ = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")
_FIS_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/([\w+=,.@-]+/)*firedrill-fis-[\w+=,.@-]+$")
_ALARM = re.compile(r"^arn:aws[a-z-]*:cloudwatch:[a-z0-9-]+:\d{12}:alarm:.+$")


def iso_duration_s(text: str) -> int:
    """'PT5M' -> 300 (the hours/minutes/seconds subset of ISO 8601 that FIS takes)."""
    match = _ISO_DURATION.fullmatch(text)
    if not match:
        raise ValueError(f"duration {text!r} is not ISO 8601 like PT5M or PT1H30M")
    total = 0
    for part, unit in zip(match.groups(), (3600, 60, 1), strict=True):
        if part:
            total += int(part[:-1]) * unit
    return total


class FisSettings(BaseModel):
    """The AWS FIS experiment of the zone outage drill (`kind = "aws"` profiles)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    availability_zone: str  # e.g. "eu-west-1a": the zone the experiment takes away
    # The experiment role FIS assumes; firedrill may pass only a role named firedrill-fis-* (IAM policy).
    role_arn: str
    # Every experiment stops itself when one of these CloudWatch alarms fires (FIS stop conditions).
    stop_alarm_arns: tuple[str, ...] = Field(min_length=1)
    template_id: str | None = None  # start this existing template instead of creating one per run
    duration: str = "PT5M"  # how long the zone stays impaired (ElastiCache power, network)
    rds_failover: bool = True  # aws:rds:failover-db-cluster on the profile's Aurora cluster
    elasticache_power: bool = True  # aws:elasticache:replicationgroup-interrupt-az-power
    vpc_id: str | None = None  # also aws:network:disrupt-connectivity on the zone's subnets of this VPC
    timeout_s: float = Field(1800.0, gt=0, le=6 * 3600)  # start to a final experiment state

    @field_validator("availability_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not _AZ.fullmatch(value):
            raise ValueError(f"{value!r} is not an Availability Zone name like eu-west-1a")
        return value

    @field_validator("role_arn")
    @classmethod
    def _role(cls, value: str) -> str:
        if not _FIS_ROLE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an IAM role named firedrill-fis-* (the one role firedrill may pass to FIS)"
            )
        return value

    @field_validator("stop_alarm_arns")
    @classmethod
    def _alarms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not _ALARM.fullmatch(v)]
        if bad:
            raise ValueError(
                f"{bad[0]!r} is not a CloudWatch alarm ARN (arn:aws:cloudwatch:REGION:ACCOUNT:alarm:NAME)"
            )
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str) -> str:
        seconds = iso_duration_s(value)
        if not 60 <= seconds <= _MAX_FIS_DURATION_S:
            raise ValueError(f"duration {value} must be between PT1M and PT12H")
        return value


class ZoneSettings(BaseModel):
    """Where the zone drill puts things. Default: PostgreSQL primary and standby in zones a and b,
    the Redis nodes and their Sentinels one per zone a, b, c, and the clients in a zone of their own."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    subnet: str = "198.18.0.0/24"  # every zone address comes from here (RFC 2544's benchmarking range)
    zones: tuple[ZoneName, ...] = Field(("a", "b", "c"), min_length=2, max_length=8)
    clients: ZoneName = "client"  # the probes' zone: a zone of its own, or one of `zones` to share it
    postgres: tuple[ZoneName, ZoneName] = ("a", "b")  # primary, standby
    redis: tuple[ZoneName, ZoneName, ZoneName] = ("a", "b", "c")  # the first master, then the replicas
    sentinels: tuple[ZoneName, ZoneName, ZoneName] = ("a", "b", "c")

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str) -> str:
        try:
            net = ipaddress.IPv4Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 network ({exc})") from exc
        special = net.is_loopback or net.is_link_local or net.is_multicast
        if special or not (net.is_private or net.is_reserved):
            raise ValueError(f"{value} must be a private or reserved range (never the machine's own network)")
        if net.prefixlen > 26:
            raise ValueError(f"{value} is too small for the zones (use a /24)")
        return value

    @model_validator(mode="after")
    def _placements(self) -> ZoneSettings:
        zones = list(self.zones)
        if len(set(zones)) != len(zones):
            raise ValueError(f"zone names must be distinct: {', '.join(zones)}")
        bad = [z for z in (*zones, self.clients) if z in RESERVED_ZONES]
        if bad:
            raise ValueError(f"zone name {bad[0]!r} is reserved (ctl, fabric)")
        placed = {"postgres": self.postgres, "redis": self.redis, "sentinels": self.sentinels}
        for what, where in placed.items():
            unknown = [z for z in where if z not in zones]
            if unknown:
                raise ValueError(f"{what} placed in unknown zone {unknown[0]!r} (zones: {', '.join(zones)})")
        if self.postgres[0] == self.postgres[1]:
            raise ValueError("the PostgreSQL primary and standby must be in different zones")
        return self

    def all_zones(self) -> list[str]:
        """The zones to create: the configured ones, then the clients' own zone if it is not one of them."""
        return [*self.zones, *([] if self.clients in self.zones else [self.clients])]
