"""Deleting what firedrill created in AWS, and only that.

A temporary resource is recognised by all of: an id starting with `firedrill-`, the tag
`firedrill:managed=true`, a `firedrill:run-id` tag, and the profile's non-production tag with an allowed
value. `delete_temporary_instance` re-reads those tags right before deleting, so no code path (the
restore drill's `finally`, or the sweeper) can delete anything else, even given a wrong id.

`sweep` (`firedrill aws cleanup`) finds leftovers of interrupted runs in the profile's region and
deletes the expired ones (`firedrill:expires-at` in the past), or every one with `include_unexpired`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from firedrill.aws.errors import aws_call
from firedrill.aws.guardrails import (
    TAG_EXPIRES,
    TAG_RUN_ID,
    check_account,
    check_tags,
    is_temporary,
    tag_dict,
)
from firedrill.aws.session import AwsSession, WaitPolicy, wait_for
from firedrill.errors import GuardrailError, HarnessError, TargetError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Leftover:
    instance_id: str
    run_id: str
    status: str
    expires_at: datetime | None
    tags: dict[str, str] = field(repr=False)

    def expired(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at <= now

    def line(self) -> str:
        until = self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if self.expires_at else "unknown expiry"
        return f"{self.instance_id} (run {self.run_id}, {self.status}, expires {until})"


@dataclass
class SweepResult:
    account: str
    found: list[Leftover] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # one line each: what and why not deleted

    def summary(self) -> str:
        found, deleted, kept = len(self.found), len(self.deleted), len(self.kept)
        return f"{found} temporary resource(s) found, {deleted} deleted, {kept} kept"


def _parse_expiry(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC)


def find_leftovers(session: AwsSession) -> list[Leftover]:
    """Every DB instance in the region that firedrill created (read-only)."""
    found = []
    paginator = session.rds().get_paginator("describe_db_instances")
    with aws_call("rds:DescribeDBInstances"):
        for page in paginator.paginate():
            for row in page["DBInstances"]:
                iid = row.get("DBInstanceIdentifier", "")
                tags = tag_dict(row.get("TagList"))
                if not is_temporary(iid, tags):
                    continue
                found.append(
                    Leftover(
                        instance_id=iid,
                        run_id=tags.get(TAG_RUN_ID, "?"),
                        status=row.get("DBInstanceStatus", "?"),
                        expires_at=_parse_expiry(tags.get(TAG_EXPIRES)),
                        tags=tags,
                    )
                )
    return found


def delete_temporary_instance(session: AwsSession, instance_id: str) -> str:
    """Delete a temporary instance after re-checking that firedrill created it. Already gone or
    already deleting is fine (returns what it found); anything not firedrill's is refused."""
    rds = session.rds()
    try:
        with aws_call("rds:DescribeDBInstances", instance_id):
            rows = rds.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"]
    except TargetError as exc:
        if exc.code in ("DBInstanceNotFound", "DBInstanceNotFoundFault"):
            return f"{instance_id} already gone"
        raise
    row = rows[0]
    tags = tag_dict(row.get("TagList"))
    if not is_temporary(instance_id, tags):
        raise GuardrailError(f"refused: {instance_id} is not a firedrill temporary instance; not deleted")
    check_tags(session.settings, f"RDS DB instance {instance_id}", tags)
    if row.get("DBInstanceStatus") == "deleting":
        return f"{instance_id} already deleting"
    with aws_call("rds:DeleteDBInstance", instance_id):
        rds.delete_db_instance(
            DBInstanceIdentifier=instance_id, SkipFinalSnapshot=True, DeleteAutomatedBackups=True
        )
    log.info("deleting temporary instance %s (run %s)", instance_id, tags.get(TAG_RUN_ID, "?"))
    return f"{instance_id} deletion started"


def wait_deleted(session: AwsSession, instance_id: str, policy: WaitPolicy) -> float:
    """Poll until the instance is gone; return the seconds waited (DeadlineExceeded past the deadline)."""

    def poll() -> tuple[bool, str]:
        try:
            with aws_call("rds:DescribeDBInstances", instance_id):
                rows = session.rds().describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"]
        except TargetError as exc:
            if exc.code in ("DBInstanceNotFound", "DBInstanceNotFoundFault"):
                return True, "deleted"
            raise
        return (not rows), rows[0].get("DBInstanceStatus", "?") if rows else "deleted"

    _, waited = wait_for(f"delete {instance_id}", poll, policy, logger=log)
    return waited


def sweep(session: AwsSession, *, include_unexpired: bool = False, dry_run: bool = False) -> SweepResult:
    """Delete leftover temporary instances: the expired ones, or all of them with `include_unexpired`."""
    identity = check_account(session)
    result = SweepResult(account=identity.account)
    now = datetime.now(UTC)
    result.found = find_leftovers(session)
    for item in result.found:
        if not include_unexpired and not item.expired(now):
            result.kept.append(f"{item.line()}: not expired (use --all to delete it anyway)")
            continue
        try:
            check_tags(session.settings, f"RDS DB instance {item.instance_id}", item.tags)
        except GuardrailError as exc:
            result.kept.append(f"{item.line()}: {exc}")
            continue
        if dry_run:
            result.kept.append(f"{item.line()}: would be deleted (dry run)")
            continue
        try:
            result.deleted.append(delete_temporary_instance(session, item.instance_id))
        except HarnessError as exc:
            result.kept.append(f"{item.line()}: {exc}")
    return result
