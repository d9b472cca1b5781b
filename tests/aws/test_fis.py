"""The zone outage on AWS through FIS: the template, the experiment's life, its stop on abort and Ctrl-C,
its record in the evidence, and its plan. moto runs FIS (its experiments move one state per read
here); Stubber scripts the exact calls where the order is the point."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from firedrill.aws.session import AwsSession
from firedrill.config import AwsSettings, Profile
from firedrill.config_zones import FisSettings
from firedrill.drills.base import DrillRun
from firedrill.drills.plan import make_plan
from firedrill.drills.zone_loss import ZoneDrill, ZoneDrillSettings
from firedrill.errors import GuardrailError, SteadyStateNotMet
from firedrill.evidence import Node
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.run_context import RunContext
from firedrill.targets.aws_fis import FisExperiment, FisZoneOutage, open_fis_zones
from firedrill.targets.aws_fis_template import TARGET_TAG, FisTargets, build_template, fis_targets
from firedrill.targets.base import TargetDescription
from tests.aws.conftest import ACCOUNT, REGION, aws_profile, recording_session
from tests.aws.resources import STAGING, create_aurora, create_replication_group

AZ = f"{REGION}a"
ALARM = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:orders-5xx"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/firedrill-fis-staging"
RDS = {"db_cluster_id": "ledger", "dbname": "app", "user": "firedrill", "sslmode": "disable"}
CACHE = {"replication_group_id": "sessions", "tls": False}


def _fis(**overrides: Any) -> dict[str, Any]:
    return {
        "availability_zone": AZ,
        "role_arn": ROLE,
        "stop_alarm_arns": [ALARM],
        "duration": "PT5M",
        **overrides,
    }


@pytest.fixture
def fis_states(moto_url: str) -> Iterator[None]:
    """moto's FIS experiments move one state per GetExperiment (pending, initiating, running, completed)."""

    def post(path: str, body: dict[str, Any]) -> None:
        req = urllib.request.Request(
            f"{moto_url}/moto-api/state-manager/{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5):
            pass

    post(
        "set-transition",
        {"model_name": "fis::experiment", "transition": {"progression": "manual", "times": 1}},
    )
    yield
    post("unset-transition", {"model_name": "fis::experiment"})


def _session(settings_for: Any, **fis: Any) -> AwsSession:
    settings: AwsSettings = settings_for(rds=RDS, elasticache=CACHE, fis=_fis(**fis))
    session = AwsSession(settings)
    create_aurora(session.rds(), "ledger")
    create_replication_group(
        session.elasticache(), "sessions", tags=[*STAGING, {"Key": TARGET_TAG, "Value": "sessions"}]
    )
    session.cloudwatch().put_metric_alarm(
        AlarmName="orders-5xx",
        MetricName="5xx",
        Namespace="app",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanThreshold",
    )
    return session


def test_the_template_holds_the_zones_actions_targets_and_stop_conditions(settings_for: Any) -> None:
    settings: AwsSettings = settings_for(fis=_fis(vpc_id="vpc-1"))
    assert settings.fis is not None
    arn = f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster:ledger"
    t = build_template(settings, settings.fis, FisTargets(arn, True, "sessions"), run_id="r1")
    assert t["roleArn"] == ROLE
    assert t["stopConditions"] == [{"source": "aws:cloudwatch:alarm", "value": ALARM}]
    assert {a["actionId"] for a in t["actions"].values()} == {
        "aws:rds:failover-db-cluster",
        "aws:elasticache:replicationgroup-interrupt-az-power",
        "aws:network:disrupt-connectivity",
    }
    assert t["targets"]["Database"] == {
        "resourceType": "aws:rds:cluster",
        "resourceArns": [arn],
        "selectionMode": "ALL",
    }
    cache = t["targets"]["CacheGroups"]
    assert (
        cache["resourceTags"] == {TARGET_TAG: "sessions"}
        and cache["parameters"]["availabilityZoneIdentifier"] == AZ
    )
    assert t["actions"]["interrupt-cache-power"]["parameters"] == {"duration": "PT5M"}
    assert t["targets"]["ZoneSubnets"]["resourceTags"] == {"environment": "staging"}
    assert t["tags"] == {"firedrill:managed": "true", "firedrill:run-id": "r1", "environment": "staging"}
    assert t["experimentOptions"]["emptyTargetResolutionMode"] == "fail"
    instance = build_template(settings, settings.fis, FisTargets("arn:db", False, None), run_id="r1")
    assert instance["actions"]["failover-db"]["parameters"] == {"forceFailover": "true"}


def test_fis_settings_name_a_bad_value_in_one_line() -> None:
    with pytest.raises(ValueError, match="firedrill-fis-"):
        FisSettings.model_validate(_fis(role_arn=f"arn:aws:iam::{ACCOUNT}:role/admin"))
    with pytest.raises(ValueError, match="at least 1"):
        FisSettings.model_validate(_fis(stop_alarm_arns=[]))
    with pytest.raises(ValueError, match="PT1M and PT12H"):
        FisSettings.model_validate(_fis(duration="PT10S"))
    with pytest.raises(ValueError, match="Availability Zone"):
        FisSettings.model_validate(_fis(availability_zone="zone-a"))


def test_a_group_fis_could_not_tell_apart_is_refused_before_anything_is_created(settings_for: Any) -> None:
    settings: AwsSettings = settings_for(rds=RDS, elasticache=CACHE, fis=_fis())
    session = AwsSession(settings)
    create_aurora(session.rds(), "ledger")
    create_replication_group(session.elasticache(), "sessions")  # no firedrill:fis-target tag
    assert settings.fis is not None
    with pytest.raises(GuardrailError, match="must carry the tag firedrill:fis-target=sessions"):
        fis_targets(session, settings.fis)
    assert session.fis().list_experiment_templates()["experimentTemplates"] == []


def test_an_experiment_runs_every_state_is_recorded_and_it_is_stopped_and_cleaned_up(
    settings_for: Any, fis_states: None
) -> None:
    session = _session(settings_for)
    outage = FisZoneOutage(session, identity=None)  # type: ignore[arg-type]
    steady = outage.check_steady_state()
    assert steady["stop_conditions"] == "orders-5xx=OK" and "created for this run" in steady["template"]
    done = outage.lose(AZ)
    assert "running" in done and outage.cut_zones() == {AZ}
    healed = outage.heal()
    assert "stopped" in healed and "stopped by firedrill" in healed and outage.cut_zones() == frozenset()
    assert outage.experiment is not None
    record = outage.fis_record(outage.experiment.issued_at or 0.0)
    assert record is not None and record.stopped_by_firedrill and record.final_status == "stopped"
    assert [s.status for s in record.states] == ["pending", "initiating", "running", "stopping", "stopped"]
    assert record.stop_conditions == [ALARM] and record.template_created
    assert any("aws:elasticache:replicationgroup-interrupt-az-power" in a for a in record.actions)
    outage.close()
    assert (
        session.fis().list_experiment_templates()["experimentTemplates"] == []
    )  # the run's template is gone


def test_a_firing_stop_alarm_means_no_steady_state_and_no_experiment(settings_for: Any) -> None:
    session = _session(settings_for)
    session.cloudwatch().set_alarm_state(AlarmName="orders-5xx", StateValue="ALARM", StateReason="test")
    with pytest.raises(SteadyStateNotMet, match="orders-5xx=ALARM"):
        FisZoneOutage(session, identity=None).check_steady_state()  # type: ignore[arg-type]
    assert session.fis().list_experiment_templates()["experimentTemplates"] == []


def test_stop_is_always_sent_when_the_wait_for_running_is_interrupted(settings_for: Any) -> None:
    """Exactly these calls, in this order: Ctrl-C while FIS initiates still stops the experiment."""
    settings: AwsSettings = settings_for(fis=_fis(vpc_id="vpc-1"))
    assert settings.fis is not None
    session = AwsSession(settings)
    experiment = FisExperiment(session, settings.fis, FisTargets())
    with Stubber(session.fis()) as stub:
        stub.add_response("create_experiment_template", {"experimentTemplate": {"id": "EXT1"}})
        stub.add_response("start_experiment", {"experiment": {"id": "EXP1", "state": {"status": "pending"}}})
        stub.add_response("stop_experiment", {"experiment": {"id": "EXP1", "state": {"status": "stopping"}}})
        stub.add_response("get_experiment", {"experiment": {"id": "EXP1", "state": {"status": "stopped"}}})
        stub.add_response("delete_experiment_template", {"experimentTemplate": {"id": "EXT1"}})
        experiment.prepare("r1")
        experiment.start("r1")
        try:
            raise KeyboardInterrupt  # as the signal handler raises it in the middle of the wait
        except KeyboardInterrupt:
            experiment.close()
        stub.assert_no_pending_responses()
    assert experiment.stopped_by_firedrill and experiment.status == "stopped"
    assert [s for _, s, _ in experiment.states] == ["pending", "stopping", "stopped"]


class _Memory:
    """A resource whose probes write to a set in memory, and whose failover is Ctrl-C'd."""

    name = "postgres"

    def __init__(self) -> None:
        self.rows: set[int] = set()

    def describe(self) -> TargetDescription:
        return TargetDescription(
            kind="postgres",
            environment_kind="aws",
            nodes=(Node(name="w", role="primary", address="w (eu-west-1a)"),),
        )

    def placements(self) -> list[tuple[str, str, str]]:
        return [("w", AZ, "w")]

    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        return {"memory": "ok"}

    def prepare_canary(self, key: str) -> None: ...

    def session_factory(self, key: str, probe: ProbeConfig) -> SessionFactory:
        rows = self.rows

        class Session:
            def write(self, seq: int) -> str:
                rows.add(seq)
                return "w"

            def close(self) -> None: ...

        return Session

    def before_fault(self) -> str:
        return "primary w"

    def fence(self, cut_zones: frozenset[str]) -> str:
        return "the platform fails over"

    def promotion_is_manual(self) -> bool:
        return False

    def promote(self, *, timeout_s: float) -> str:
        raise KeyboardInterrupt

    def recovered_nodes(self) -> frozenset[str] | None:
        return None

    def read_back(self, key: str) -> frozenset[int]:
        return frozenset(self.rows)

    def restore_topology(self, *, timeout_s: float) -> str:
        return "memory: fine"


def test_ctrl_c_during_the_failover_stops_the_experiment_and_the_evidence_says_so(
    settings_for: Any, fis_states: None, tmp_path: Path
) -> None:
    session = _session(settings_for)
    profile: Profile = aws_profile(session.settings)
    run = DrillRun(
        drill="zone-loss",
        scenario="power",
        ctx=RunContext(environment=profile.name, via="pytest", out_root=tmp_path),
        probe_config=ProbeConfig(rate_hz=50),
    )
    with open_fis_zones(profile, session) as outage:
        drill = ZoneDrill(
            run, outage, [_Memory()], clients_zone="here", settings=ZoneDrillSettings(baseline_s=0.2)
        )
        drill.lose(AZ)
        with pytest.raises(KeyboardInterrupt) as interrupted:
            drill.recover()  # Ctrl-C while the platform fails over
        run.record_failure(interrupted.value)  # what the plugin's holder does, then it concludes
        drill.conclude()
        record = run.evidence
    assert record is not None and record.verdict == "aborted"
    assert record.zones is not None and record.zones.fis is not None
    fis = record.zones.fis
    assert fis.stopped_by_firedrill and fis.final_status == "stopped" and fis.experiment_id
    assert [s.status for s in fis.states][-2:] == ["stopping", "stopped"]
    assert record.zones.faults[0].kind == "fis-experiment" and record.zones.faults[0].healed_s is not None
    assert session.fis().list_experiment_templates()["experimentTemplates"] == []


def test_the_plan_lists_every_fis_action_and_calls_only_read_only_apis(settings_for: Any) -> None:
    seeded = _session(settings_for)
    session, calls = recording_session(seeded.settings)
    calls.clear()
    text = make_plan("zone-loss", aws_profile(seeded.settings), session).render()
    assert calls[0] == "GetCallerIdentity"
    assert all(c.startswith(("Describe", "List", "Get")) for c in calls), calls
    assert seeded.fis().list_experiment_templates()["experimentTemplates"] == []
    assert "[aws] fis:CreateExperimentTemplate role " + ROLE in text
    assert (
        f"[aws] fis:StartExperiment {AZ}: failover-db: aws:rds:failover-db-cluster on Clusters=Database"
        in text
    )
    assert (
        "aws:elasticache:replicationgroup-interrupt-az-power on ReplicationGroups=CacheGroups (duration=PT5M)"
        in text
    )
    assert "[aws] fis:StopExperiment the experiment: on an error, abort, Ctrl-C/SIGTERM" in text
    assert f"stop conditions: {ALARM}" in text
