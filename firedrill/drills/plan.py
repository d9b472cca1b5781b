"""`firedrill plan <drill> --env ...`: every change a drill would make, and none made.

On AWS the plan runs the same guardrails as a drill (account, then tags on every resource it would
touch), reads the resources' current state, and asks the adapter what it would do. Only read-only
calls are made (`sts:GetCallerIdentity`, `Describe*`, `List*`); tests hold it to that. Which adapter
plans a drill is the drill's own declaration in the catalogue. Elsewhere the adapter for the drill's
store and the environment kind plans it when it can (`factory.PLANNERS`: the HA staging, systems someone
else runs), else the drill's own local text does.
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
from firedrill.targets.factory import adapter_planner
from firedrill.targets.lease import LeasedTarget, PlannedLease


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
    if spec.local_changes is not None:  # the drill lists exactly what it creates and cuts
        exact: Callable[[Profile], tuple[list[str], list[Change]]] = resolve_name(spec.local_changes)
        checks, plan.changes[1:2] = exact(profile)
        plan.checks += checks
    return plan


def make_plan(drill: str, profile: Profile, session: AwsSession | None = None) -> Plan:
    """The plan of `drill` on `profile`. `session` is for tests; by default one is made from the
    profile."""
    spec = get_drill(drill)
    # The adapter's own lines: what the HA staging starts; a system someone else runs: its guardrails
    # (read-only calls), then every call and command a drill makes. A drill listing its exact local
    # changes (the zone drill's namespaces) keeps them.
    adapter = adapter_planner(spec.stores, profile.kind) if spec.local_changes is None else None
    if adapter is not None:
        checks, changes = adapter(profile)
        return Plan(spec.name, profile.name, checks=checks, changes=changes)
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
    lease = target.drill_lease() if isinstance(target, LeasedTarget) else None
    if isinstance(lease, PlannedLease):  # one drill at a time: the lease taken first, given back last
        take, give = lease.plan_changes()
        plan.changes = [*take, *plan.changes, *give]
    return plan
