"""`firedrill plan <drill> --env ...`: every change a drill would make, and none made.

On AWS the plan runs the same guardrails as a drill (account, then tags on every resource it would
touch), reads the resources' current state, and asks the adapter what it would do. Only read-only
calls are made (`sts:GetCallerIdentity`, `Describe*`, `List*`); tests hold it to that. Which adapter
plans a drill is the drill's own declaration in the catalogue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pkgutil import resolve_name

from firedrill.aws.session import AwsSession, aws_settings
from firedrill.catalogue import DrillSpec, get_drill
from firedrill.config import Profile
from firedrill.errors import ConfigError
from firedrill.targets.base import Change, Plannable


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


def _local_plan(spec: DrillSpec, profile: Profile) -> Plan:
    plan = Plan(
        spec.name, profile.name, checks=["local staging: nothing outside a temp directory is touched"]
    )
    plan.changes = [
        Change(
            "local",
            "start",
            spec.local_plan.starts,
            "in a new temp directory on free loopback ports (never 5432/6379)",
        ),
        Change("local", "fault", spec.local_plan.faults, "one per scenario, as the feature says"),
        Change("local", "teardown", "every process and the temp directory", "always, also on failure"),
    ]
    return plan


def make_plan(drill: str, profile: Profile, session: AwsSession | None = None) -> Plan:
    """The plan of `drill` on `profile`. `session` is for tests; by default one is made from the
    profile."""
    spec = get_drill(drill)
    if profile.kind != "aws":
        return _local_plan(spec, profile)
    if spec.aws_plan is None:
        raise ConfigError(f"drill '{drill}' has no AWS adapter to plan with")
    planner: Callable[[AwsSession], Plannable] = resolve_name(spec.aws_plan)
    target = planner(session or AwsSession(aws_settings(profile)))
    ident = target.identity
    plan = Plan(drill, profile.name, checks=[f"AWS account {ident.account} is allowed ({ident.arn})"])
    plan.checks += [f"{target.label}: tagged {target.guardrail}", *target.plan_checks()]
    plan.changes = target.plan(rate_hz=profile.probe.rate_hz)
    return plan
