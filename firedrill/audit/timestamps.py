"""The one parser of the ISO 8601 times evidence records carry (`started_at`, `finished_at`)."""

from __future__ import annotations

from datetime import UTC, datetime

from firedrill.errors import ConfigError


def parse_utc(stamp: str, what: str = "started_at") -> datetime:
    """`stamp` as an aware UTC datetime; a time without an offset is taken as UTC.

    ConfigError ("<what> '...' is not an ISO 8601 time") when it does not parse.
    """
    try:
        dt = datetime.fromisoformat(stamp)
    except ValueError as exc:
        raise ConfigError(f"{what} {stamp!r} is not an ISO 8601 time") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
