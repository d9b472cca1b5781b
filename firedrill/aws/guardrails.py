"""What firedrill may touch in AWS, checked before it changes anything, and how it marks what it creates.

1. The account: `sts.get_caller_identity()` must name one of the profile's `account_ids`.
2. Every resource touched (the DB instance or Aurora cluster and its members, the replication group)
   must carry the profile's non-production tag with an allowed value. Untagged is refused; a value that
   reads as production is refused even if someone listed it (the config refuses to list it, too).
3. What firedrill creates (temporary restore instances) carries `firedrill:*` tags: run id, expiry,
   purpose, plus the non-production tag, so `firedrill aws cleanup` can find them and only them.

Each refusal is one line that starts with "refused:" and says that nothing was changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from firedrill.aws.errors import aws_call
from firedrill.config import PRODUCTION_VALUES, AwsSettings
from firedrill.errors import GuardrailError

if TYPE_CHECKING:
    from firedrill.aws.session import AwsSession

TAG_MANAGED = "firedrill:managed"  # "true" on everything firedrill created
TAG_RUN_ID = "firedrill:run-id"
TAG_EXPIRES = "firedrill:expires-at"  # ISO 8601 UTC; `firedrill aws cleanup` deletes it after this
TAG_PURPOSE = "firedrill:purpose"  # e.g. "pitr-restore"
TEMP_PREFIX = "firedrill-"  # every temporary resource id starts with this

NOTHING_CHANGED = "nothing was changed"


@dataclass(frozen=True, slots=True)
class Identity:
    account: str
    arn: str


def tag_dict(tags: Iterable[Mapping[str, object]] | None) -> dict[str, str]:
    """AWS's [{"Key": k, "Value": v}, ...] as a dict."""
    return {str(t["Key"]): str(t.get("Value", "")) for t in tags or () if "Key" in t}


def check_account(session: AwsSession) -> Identity:
    """The first AWS call of every entry point: refuse an account the profile does not list."""
    with aws_call("sts:GetCallerIdentity"):
        ident = session.sts().get_caller_identity()
    identity = Identity(account=ident.get("Account", ""), arn=ident.get("Arn", ""))
    allowed = session.settings.account_ids
    if identity.account not in allowed:
        raise GuardrailError(
            f"refused: AWS account {identity.account or '?'} ({identity.arn}) is not one of this profile's "
            f"account_ids ({', '.join(allowed)}); {NOTHING_CHANGED}"
        )
    return identity


def check_tags(settings: AwsSettings, resource: str, tags: Mapping[str, str]) -> str:
    """Refuse `resource` unless it carries the non-production tag with an allowed value.

    Returns "key=value" for the record."""
    key, allowed = settings.nonprod_tag.key, settings.nonprod_tag.allowed
    wanted = f"{key}={'|'.join(allowed)}"
    value = tags.get(key)
    if value is None:
        raise GuardrailError(f"refused: {resource} has no '{key}' tag (needs {wanted}); {NOTHING_CHANGED}")
    if value.strip().lower() in PRODUCTION_VALUES:
        raise GuardrailError(f"refused: {resource} is tagged {key}={value} (production); {NOTHING_CHANGED}")
    if value not in allowed:
        raise GuardrailError(
            f"refused: {resource} is tagged {key}={value}, not an allowed non-production value "
            f"({wanted}); {NOTHING_CHANGED}"
        )
    return f"{key}={value}"


def temp_tags(settings: AwsSettings, run_id: str, purpose: str, expires: datetime) -> list[dict[str, str]]:
    """Tags for a resource firedrill creates: found (and only it) by `firedrill aws cleanup`."""
    return [
        {"Key": TAG_MANAGED, "Value": "true"},
        {"Key": TAG_RUN_ID, "Value": run_id},
        {"Key": TAG_PURPOSE, "Value": purpose},
        {"Key": TAG_EXPIRES, "Value": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
        {"Key": settings.nonprod_tag.key, "Value": settings.nonprod_tag.allowed[0]},
    ]


def expiry(now: datetime, keep_hours: float) -> datetime:
    return now + timedelta(hours=keep_hours)


def is_temporary(resource_id: str, tags: Mapping[str, str]) -> bool:
    """Created by firedrill: the id prefix, the managed flag and a run id, all three."""
    return (
        resource_id.startswith(TEMP_PREFIX) and tags.get(TAG_MANAGED) == "true" and bool(tags.get(TAG_RUN_ID))
    )
