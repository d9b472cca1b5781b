"""The schedule's configuration: the `[schedule]` model, the cron trigger, fire times and quarters.

`ScheduleConfig.from_mapping` validates a profile's `schedule:` section and fails with a ConfigError that
names the first bad field (APScheduler's own messages do not). `store_kind` tells a SQLite job store (a
path or sqlite:///path) from a PostgreSQL one (a postgresql:// URL); `safe_url` is a URL fit for a message
(no user info, no query: passwords never reach one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firedrill.errors import ConfigError

DEFAULT_RUNNER = "firedrill.runner:run_drills"
DEFAULT_STORE = "reports/schedule.sqlite"

IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")  # a plain SQL identifier (PostgreSQL schema)
CRON_FIELDS = ("year", "month", "week", "day", "day_of_week", "hour", "minute", "second")


class CronFields(BaseModel):
    """APScheduler `CronTrigger` fields. Default: 09:00 UTC on the first Monday of each quarter.

    Note `day_of_week` numbering starts at 0 = Monday (unlike crontab); prefer names ("mon").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    year: str | None = None
    month: str | None = "1,4,7,10"
    week: str | None = None
    day: str | None = "1st mon"
    day_of_week: str | None = None
    hour: str | None = "9"
    minute: str | None = "0"
    second: str | None = None
    timezone: str = "UTC"


class ScheduleConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    drills: list[str] = Field(min_length=1)
    environment: str = Field(min_length=1)
    cron: CronFields = CronFields()
    misfire_grace_hours: float = Field(default=6.0, gt=0)
    # A file path (or sqlite:///path) for SQLite, or a postgresql:// URL.
    job_store: str = DEFAULT_STORE
    pg_schema: str = "public"  # PostgreSQL only: schema holding the jobs and runs tables
    runner: str = DEFAULT_RUNNER  # "module:function", called as function(drills, environment, via)
    job_id: str | None = None  # default: firedrill-<environment>
    blocking: bool = False  # build_scheduler: BlockingScheduler instead of BackgroundScheduler
    leader_poll_s: float = Field(default=30.0, gt=0)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ScheduleConfig:
        """Validate a profile's `schedule:` section; ConfigError names the first bad field."""
        try:
            config = cls.model_validate(dict(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"schedule.{where}: {first['msg']}") from exc
        build_trigger(config.cron)
        store_kind(config.job_store)
        if not IDENT_RE.match(config.pg_schema):
            raise ConfigError(f"schedule.pg_schema: {config.pg_schema!r} is not a plain SQL identifier")
        return config

    @property
    def effective_job_id(self) -> str:
        return self.job_id or f"firedrill-{self.environment}"

    @property
    def misfire_grace_s(self) -> int:
        return round(self.misfire_grace_hours * 3600)


def build_trigger(cron: CronFields) -> CronTrigger:
    """The CronTrigger for `cron`; ConfigError names the bad field (APScheduler's messages do not)."""
    try:
        tz = ZoneInfo(cron.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"schedule cron field 'timezone': unknown time zone {cron.timezone!r}") from exc
    fields = {name: getattr(cron, name) for name in CRON_FIELDS if getattr(cron, name) is not None}
    for name, value in fields.items():
        try:
            CronTrigger(timezone=tz, **{name: value})
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"schedule cron field {name!r}: {value!r} is not valid: {exc}") from exc
    try:
        trigger = CronTrigger(timezone=tz, **fields)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"schedule cron fields {fields}: {exc}") from exc
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ConfigError(f"schedule cron fields {fields} never fire again")
    return trigger


def next_run_times(config: ScheduleConfig, n: int = 4, now: datetime | None = None) -> list[datetime]:
    """The next `n` fire times after `now` (for `schedule --list`), timezone-aware."""
    trigger = build_trigger(config.cron)
    current = aware(now) if now is not None else datetime.now(UTC)
    times: list[datetime] = []
    previous: datetime | None = None
    for _ in range(n):
        fire = trigger.get_next_fire_time(previous, previous or current)
        if fire is None:
            break
        times.append(fire)
        previous = fire
    return times


def fire_times_between(config: ScheduleConfig, start: date, end: date) -> list[datetime]:
    """The schedule's fire times from `start` 00:00 UTC to `end` 24:00 UTC (for the evidence report)."""
    trigger = build_trigger(config.cron)
    lo = datetime.combine(start, time(0), UTC)
    hi = datetime.combine(end, time(23, 59, 59, 999999), UTC)
    times: list[datetime] = []
    previous: datetime | None = None
    current = lo
    while len(times) < 10_000:
        fire = trigger.get_next_fire_time(previous, current)
        if fire is None or fire > hi:
            break
        times.append(fire)
        previous = fire
        current = fire
    return times


def quarter_of(dt: datetime) -> str:
    """'2026-Q4' for any time in October-December 2026, in UTC (naive times are taken as UTC)."""
    utc = aware(dt).astimezone(UTC)
    return f"{utc.year}-Q{(utc.month - 1) // 3 + 1}"


def store_kind(job_store: str) -> tuple[str, str]:
    """("sqlite", path) or ("postgresql", postgresql:// URL) for a `job_store` value."""
    value = job_store.strip()
    if not value:
        raise ConfigError("schedule.job_store is empty")
    lowered = value.lower()
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://"):
        if lowered.startswith(prefix):
            return "postgresql", "postgresql://" + value[len(prefix) :]
    if lowered.startswith(("postgresql://", "postgres://")):
        return "postgresql", value
    if lowered.startswith("sqlite:///"):
        return "sqlite", value[len("sqlite:///") :]
    if "://" in value:
        raise ConfigError(f"schedule.job_store: unsupported URL scheme in {safe_url(value)}")
    return "sqlite", value


def safe_url(url: str) -> str:
    """The URL without user info or query (passwords never reach a message)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<conninfo>"
    host = rest.rsplit("@", 1)[-1].split("?", 1)[0]
    return f"{scheme}://{host}"


def aware(dt: datetime) -> datetime:
    """`dt` with UTC attached when it is naive."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


__all__ = [
    "DEFAULT_RUNNER",
    "DEFAULT_STORE",
    "CronFields",
    "ScheduleConfig",
    "build_trigger",
    "fire_times_between",
    "next_run_times",
    "quarter_of",
    "safe_url",
    "store_kind",
]
