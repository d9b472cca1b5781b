"""`firedrill plan <drill> --env ...`: every change a drill would make, and none made.

The plan runs the same guardrails as a drill (account, then tags on every resource it would touch),
reads the resources' current state, and asks the adapter what it would do. Only read-only calls are
made (`sts:GetCallerIdentity`, `Describe*`, `List*`); tests hold it to that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from harness.config import Profile
from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.targets.aws_elasticache import ElastiCacheFailoverTarget
    from harness.targets.aws_rds import RdsFailoverTarget
    from harness.targets.aws_rds_restore import RdsRestoreTarget

DRILLS = ("failover", "cache-failover", "pitr")

ChangeKind = Literal["aws", "data", "wait", "local"]


@dataclass(frozen=True, slots=True)
class Change:
    """One thing a drill would do: an AWS API call that changes something, a write through the data
    plane, a bounded wait, or a local action."""

    kind: ChangeKind
    action: str  # e.g. "rds:RebootDBInstance"
    target: str
    detail: str = ""

    def line(self) -> str:
        return f"[{self.kind}] {self.action} {self.target}" + (f": {self.detail}" if self.detail else "")


@dataclass
class Plan:
    drill: str
    environment: str
    checks: list[str] = field(default_factory=list)  # guardrails passed and what was looked at
    changes: list[Change] = field(default_factory=list)

    def render(self) -> str:
        out = [f"plan for drill '{self.drill}' in environment '{self.environment}'"]
        out += [f"  ok  {c}" for c in self.checks]
        out.append("the drill would:")
        out += [f"  {i}. {c.line()}" for i, c in enumerate(self.changes, 1)]
        out.append("nothing was changed (plan only)")
        return "\n".join(out)


def _local_plan(drill: str, profile: Profile) -> Plan:
    plan = Plan(drill, profile.name, checks=["local staging: nothing outside a temp directory is touched"])
    store, fault = {
        "failover": ("a PostgreSQL primary and a streaming standby", "kill / stop / freeze the primary"),
        "pitr": (
            "a PostgreSQL primary and standby with a WAL archive",
            "DROP TABLE / DELETE on its own table, restores beside it",
        ),
        "cache-failover": (
            "a Redis master, 2 replicas and 3 Sentinels",
            "kill / fail over / stall the master",
        ),
    }[drill]
    plan.changes = [
        Change("local", "start", store, "in a new temp directory on free loopback ports (never 5432/6379)"),
        Change("local", "fault", fault, "one per scenario, as the feature says"),
        Change("local", "teardown", "every process and the temp directory", "always, also on failure"),
    ]
    return plan


def make_plan(drill: str, profile: Profile, session: object | None = None) -> Plan:
    """The plan of `drill` on `profile`. `session` (an AwsSession) is for tests; by default one is
    made from the profile."""
    if drill not in DRILLS:
        raise ConfigError(f"unknown drill '{drill}' (known: {', '.join(DRILLS)})")
    if profile.kind != "aws":
        return _local_plan(drill, profile)

    from harness.aws.session import AwsSession, aws_settings

    aws = session if isinstance(session, AwsSession) else AwsSession(aws_settings(profile))
    rate = profile.probe.rate_hz
    # Each adapter checks the account first, then the tags of what it would touch (read-only).
    target: RdsFailoverTarget | ElastiCacheFailoverTarget | RdsRestoreTarget
    extra: list[str] = []
    if drill == "failover":
        from harness.targets.aws_rds import connect_rds

        target = connect_rds(aws, resolve_secrets=False)
    elif drill == "cache-failover":
        from harness.targets.aws_elasticache import connect_elasticache

        target = connect_elasticache(aws, resolve_secrets=False)
    else:
        from harness.targets.aws_rds_restore import connect_rds_restore

        restore = connect_rds_restore(aws, run_id="<run id>", resolve_secrets=False)
        extra = restore.backup_checks_lines()
        target = restore
    ident = target.identity
    plan = Plan(drill, profile.name, checks=[f"AWS account {ident.account} is allowed ({ident.arn})"])
    plan.checks += [f"{target.label}: tagged {target.guardrail}", *extra]
    plan.changes = target.plan(rate_hz=rate)
    return plan
