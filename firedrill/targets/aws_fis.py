"""The zone outage on AWS: an AWS FIS experiment takes the profile's Availability Zone away while the
zone drill's probes write to the RDS database and the ElastiCache group (`ZoneOutage` and
`ZoneResource` over the existing RDS and ElastiCache adapters).

The experiment template (created for the run and deleted after it, or an existing one the profile
names) holds the per-service actions of FIS's "AZ Availability: Power Interruption" scenario that
apply here:

* `aws:rds:failover-db-cluster` on the Aurora cluster (`aws:rds:reboot-db-instances` with
  forceFailover on a Multi-AZ instance), targeted by ARN;
* `aws:elasticache:replicationgroup-interrupt-az-power` on the replication group, in the zone, for
  `duration`; FIS selects replication groups by tag only, so the group must carry
  `firedrill:fis-target = <its id>` (checked before anything is created: nothing else matches);
* optionally `aws:network:disrupt-connectivity` (scope all) on the zone's subnets of `vpc_id` that carry
  the profile's non-production tag.

Stop conditions are the profile's CloudWatch alarms (at least one; all must be OK before the start).
The experiment is always stopped when the drill ends early: on an error, an abort, Ctrl-C/SIGTERM
(the drill's teardown heals, which stops it) and at interpreter exit. Every state it goes through,
with its time on the drill's clock, is recorded in the evidence (`FisRecord`). The fault time is taken
just before `StartExperiment`, so the RTO includes FIS's own initiation (conservative).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from firedrill.aws.errors import aws_call
from firedrill.aws.guardrails import NOTHING_CHANGED, Identity, check_account
from firedrill.aws.session import AwsSession, aws_settings, wait_for
from firedrill.config import Profile
from firedrill.config_zones import FisSettings
from firedrill.errors import (
    ConfigError,
    DeadlineExceeded,
    GuardrailError,
    HarnessError,
    SteadyStateNotMet,
    TargetError,
    first_line,
)
from firedrill.evidence_zones import FisRecord, FisStateRecord, ZoneEvidence, ZoneFaultRecord
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.staging.common import track, untrack
from firedrill.targets.aws_elasticache import connect_elasticache
from firedrill.targets.aws_fis_template import (
    FisTargets,
    build_template,
    describe_actions,
    fis_tags,
    fis_targets,
)
from firedrill.targets.aws_rds import connect_rds
from firedrill.targets.base import FailoverTarget, TargetDescription
from firedrill.targets.zone_base import ZoneResource

FINAL = frozenset({"completed", "stopped", "failed", "cancelled"})
MECHANISM = (
    "AWS FIS experiment: the per-service actions of the AZ power interruption scenario (RDS failover, "
    "ElastiCache AZ power interruption, optionally the zone's subnets disconnected), CloudWatch alarms "
    "as stop conditions, always stopped when the drill ends early"
)


@dataclass(eq=False)  # identity-hashed: tracked for the atexit stop
class FisExperiment:
    """One experiment's life: template, start, every state seen, stop; never left running."""

    session: AwsSession
    fis: FisSettings
    targets: FisTargets
    template_id: str | None = None
    template_created: bool = False
    experiment_id: str | None = None
    actions: list[str] = field(default_factory=list)
    states: list[tuple[float, str, str]] = field(default_factory=list)  # (monotonic, status, reason)
    stopped_by_firedrill: bool = False
    error: str | None = None
    issued_at: float | None = None
    returned_at: float | None = None
    ended_at: float | None = None

    @property
    def status(self) -> str | None:
        return self.states[-1][1] if self.states else None

    @property
    def running(self) -> bool:
        return self.experiment_id is not None and self.status not in FINAL

    def prepare(self, run_id: str) -> str:
        """Create the run's template, or check the profile's own one is tagged non-production."""
        client = self.session.fis()
        if self.fis.template_id:
            with aws_call("fis:GetExperimentTemplate", self.fis.template_id):
                found = client.get_experiment_template(id=self.fis.template_id)["experimentTemplate"]
            tag = self.session.settings.nonprod_tag
            value = found.get("tags", {}).get(tag.key)
            if value not in tag.allowed:
                raise GuardrailError(
                    f"refused: FIS template {self.fis.template_id} is not tagged {tag.key}="
                    f"{'|'.join(tag.allowed)}; {NOTHING_CHANGED}"
                )
            self.template_id = self.fis.template_id
            self.actions = [
                f"{name}: {a.get('actionId', '?')}" for name, a in found.get("actions", {}).items()
            ]
            return f"FIS template {self.template_id} (the profile's): {'; '.join(self.actions)}"
        request = build_template(self.session.settings, self.fis, self.targets, run_id=run_id)
        with aws_call("fis:CreateExperimentTemplate", self.fis.availability_zone):
            made = client.create_experiment_template(**request)["experimentTemplate"]
        self.template_id, self.template_created = made["id"], True
        self.actions = describe_actions(request)
        track(self)
        return f"FIS template {self.template_id} created for this run: {'; '.join(self.actions)}"

    def start(self, run_id: str) -> str:
        if self.template_id is None:
            raise HarnessError("no FIS experiment template: prepare() first")
        self.issued_at = time.monotonic()
        with aws_call("fis:StartExperiment", self.template_id):
            started = self.session.fis().start_experiment(
                experimentTemplateId=self.template_id,
                clientToken=f"firedrill-start-{run_id}-{secrets.token_hex(3)}",
                tags=fis_tags(self.session.settings, run_id),
            )["experiment"]
        self.returned_at = time.monotonic()
        self.experiment_id = started["id"]
        self._record(started.get("state", {}))
        track(self)
        return f"FIS experiment {self.experiment_id} started from {self.template_id}"

    def poll(self) -> str:
        assert self.experiment_id is not None
        with aws_call("fis:GetExperiment", self.experiment_id):
            got = self.session.fis().get_experiment(id=self.experiment_id)["experiment"]
        self._record(got.get("state", {}))
        return self.status or "unknown"

    def wait(self, until: frozenset[str], timeout_s: float) -> str:
        """Poll until the status is one of `until` (or final); return it."""

        def poll() -> tuple[bool, str]:
            status = self.poll()
            return status in until or status in FINAL, status

        status, _ = wait_for(f"FIS experiment {self.experiment_id}", poll, self.session.policy(timeout_s))
        return status

    def end(self, timeout_s: float) -> str:
        """StopExperiment unless it already ended; then wait for a final state. Never leaves it running."""
        if self.experiment_id is None:
            return ""
        if self.status not in FINAL:
            with aws_call("fis:StopExperiment", self.experiment_id):
                stopped = self.session.fis().stop_experiment(id=self.experiment_id)["experiment"]
            self.stopped_by_firedrill = True
            self._record(stopped.get("state", {}))
            with contextlib.suppress(DeadlineExceeded):
                self.wait(FINAL, timeout_s)
        return f"FIS experiment {self.experiment_id} {self.status}" + (
            " (stopped by firedrill)" if self.stopped_by_firedrill else ""
        )

    def delete_template(self) -> None:
        if self.template_created and self.template_id and not self.running:
            with aws_call("fis:DeleteExperimentTemplate", self.template_id):
                self.session.fis().delete_experiment_template(id=self.template_id)
            self.template_created = False

    def stop(self) -> None:
        """The atexit hook of a tracked experiment: `close()`."""
        self.close()

    def close(self) -> None:
        """Stop, then delete the run's template; never raises (teardown, atexit)."""
        try:
            self.end(self.fis.timeout_s)
            self.delete_template()
        except HarnessError as exc:
            self.error = self.error or first_line(exc)
        untrack(self)

    def _record(self, state: Any) -> None:
        status, reason = str(state.get("status", "unknown")), str(state.get("reason", ""))
        if not self.states or self.states[-1][1:] != (status, reason):
            self.states.append((time.monotonic(), status, reason))
        if status in FINAL and self.ended_at is None:
            self.ended_at = time.monotonic()

    def record(self, t0: float) -> FisRecord:
        return FisRecord(
            region=self.session.settings.region,
            template_id=self.template_id,
            template_created=self.template_id is not None and not self.fis.template_id,
            experiment_id=self.experiment_id,
            actions=list(self.actions),
            stop_conditions=list(self.fis.stop_alarm_arns),
            states=[FisStateRecord(t_s=round(t - t0, 6), status=s, reason=r) for t, s, r in self.states],
            final_status=self.status,
            stopped_by_firedrill=self.stopped_by_firedrill,
            error=self.error,
        )


class PlatformResource:
    """A failover target of the cloud (RDS, ElastiCache) as a zone resource: the platform promotes,
    the endpoint's DNS name follows the new primary, so any node behind it counts as recovered."""

    def __init__(self, name: str, target: FailoverTarget) -> None:
        self.name = name
        self.target = target

    def describe(self) -> TargetDescription:
        return self.target.describe()

    def placements(self) -> list[tuple[str, str, str]]:
        return [(n.name, n.address.rsplit("(", 1)[-1].rstrip(")"), n.address) for n in self.describe().nodes]

    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        return self.target.check_steady_state(max_lag_s=max_lag_s, timeout_s=timeout_s)

    def prepare_canary(self, key: str) -> None:
        self.target.prepare_canary(key)

    def session_factory(self, key: str, probe: ProbeConfig) -> SessionFactory:
        return self.target.session_factory(key, probe)

    def before_fault(self) -> str:
        primary = [n for n in self.describe().nodes if n.role == "primary"]
        return f"primary {primary[0].name} ({primary[0].address})" if primary else "primary unknown"

    def fence(self, cut_zones: frozenset[str]) -> str:
        return f"FIS impairs {', '.join(sorted(cut_zones))}: the platform fails {self.name} over itself"

    def promotion_is_manual(self) -> bool:
        return False

    def promote(self, *, timeout_s: float) -> str:
        return "the platform fails over (FIS action); recovery is measured at the probes"

    def recovered_nodes(self) -> frozenset[str] | None:
        return None

    def read_back(self, key: str) -> frozenset[int]:
        return self.target.read_back(key)

    def restore_topology(self, *, timeout_s: float) -> str:
        return self.target.restore_topology(timeout_s=timeout_s)


class FisZoneOutage:
    mechanism = MECHANISM
    partitions = False

    def __init__(self, session: AwsSession, identity: Identity, run_id: str | None = None) -> None:
        fis = session.settings.fis
        if fis is None:
            raise ConfigError("the profile's aws section has no [fis] part (the zone drill's experiment)")
        self.session, self.fis, self.identity = session, fis, identity
        self.run_id = run_id or f"zone-{secrets.token_hex(3)}"
        self._resources: dict[str, PlatformResource] = {}
        self.experiment: FisExperiment | None = None

    def resources(self, names: tuple[str, ...]) -> list[ZoneResource]:
        for name in names:
            if name not in self._resources:
                if name == "postgres":
                    self._resources[name] = PlatformResource(name, connect_rds(self.session))
                elif name == "redis":
                    self._resources[name] = PlatformResource(name, connect_elasticache(self.session))
                else:
                    raise ConfigError(f"no AWS zone resource {name!r} (known: postgres, redis)")
        return [self._resources[n] for n in names]

    def client_factory(self, zone: str, factory: SessionFactory) -> SessionFactory:
        return factory  # the probes run where firedrill runs; FIS impairs the zone, not the client

    def control(self) -> AbstractContextManager[None]:
        return nullcontext()

    def check_steady_state(self) -> dict[str, str]:
        """The stop-condition alarms exist and are OK, the targets are guard-railed, and the template is
        ready (created now if the profile names none)."""
        names = [arn.rsplit(":alarm:", 1)[-1] for arn in self.fis.stop_alarm_arns]
        with aws_call("cloudwatch:DescribeAlarms", ", ".join(names)):
            alarms = self.session.cloudwatch().describe_alarms(AlarmNames=names)["MetricAlarms"]
        states = {a.get("AlarmName", "?"): a.get("StateValue", "?") for a in alarms}
        missing = [n for n in names if n not in states]
        if missing:
            raise SteadyStateNotMet(f"stop-condition alarm(s) not found: {', '.join(missing)}")
        firing = [f"{n}={s}" for n, s in states.items() if s != "OK"]
        if firing:
            raise SteadyStateNotMet(
                f"stop-condition alarm(s) not OK, FIS would stop at once: {', '.join(firing)}"
            )
        experiment = self._experiment()
        ready = experiment.prepare(self.run_id) if experiment.template_id is None else "template ready"
        return {"stop_conditions": ", ".join(f"{n}={s}" for n, s in states.items()), "template": ready}

    def _experiment(self) -> FisExperiment:
        """The next scenario's experiment (one per scenario; an earlier one is ended and cleaned up)."""
        if self.experiment is None or self.experiment.experiment_id is not None:
            if self.experiment is not None:
                self.experiment.close()
            self.experiment = FisExperiment(self.session, self.fis, fis_targets(self.session, self.fis))
        return self.experiment

    def lose(self, zone: str) -> str:
        if zone != self.fis.availability_zone:
            raise ConfigError(f"the FIS experiment impairs {self.fis.availability_zone}, not {zone!r}")
        experiment = self._experiment()
        if experiment.template_id is None:
            experiment.prepare(self.run_id)
        started = experiment.start(self.run_id)
        try:
            status = experiment.wait(frozenset({"running"}), self.fis.timeout_s)
        except BaseException:
            experiment.end(self.fis.timeout_s)
            raise
        if status != "running":
            reason = experiment.states[-1][2] if experiment.states else ""
            raise TargetError(f"{started}, but it ended {status} before running: {reason}", code=status)
        return f"{started}: running ({'; '.join(experiment.actions)})"

    def partition(self, zone: str, *, with_zones: tuple[str, ...]) -> str:
        raise HarnessError("FIS cannot partition a zone while clients inside it keep writing")

    def cut_zones(self) -> frozenset[str]:
        running = self.experiment is not None and self.experiment.running
        return frozenset({self.fis.availability_zone}) if running else frozenset()

    def heal(self) -> str:
        if self.experiment is None or self.experiment.experiment_id is None:
            return ""
        if not self.experiment.running:
            return ""
        return self.experiment.end(self.fis.timeout_s)

    def layout(self) -> ZoneEvidence:
        return ZoneEvidence(mechanism=self.mechanism, zones=[self.fis.availability_zone])

    def fault_records(self, t0: float) -> list[ZoneFaultRecord]:
        e = self.experiment
        if e is None or e.issued_at is None or e.returned_at is None or e.issued_at < t0:
            return []
        end = None if e.ended_at is None else round(e.ended_at - t0, 6)
        return [
            ZoneFaultRecord(
                kind="fis-experiment",
                zone=self.fis.availability_zone,
                island=[self.fis.availability_zone],
                issued_s=round(e.issued_at - t0, 6),
                returned_s=round(e.returned_at - t0, 6),
                heal_issued_s=end,
                healed_s=end,
            )
        ]

    def fis_record(self, t0: float) -> FisRecord | None:
        return None if self.experiment is None else self.experiment.record(t0)

    def close(self) -> None:
        if self.experiment is not None:
            self.experiment.close()


@contextlib.contextmanager
def open_fis_zones(profile: Profile, session: AwsSession | None = None) -> Iterator[FisZoneOutage]:
    """The zone outage through FIS; its experiment is stopped and its template deleted on the way out."""
    session = session or AwsSession(aws_settings(profile))
    outage = FisZoneOutage(session, check_account(session))
    try:
        yield outage
    finally:
        outage.close()
