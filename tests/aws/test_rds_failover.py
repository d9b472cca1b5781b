"""RDS failover drills end to end: moto for the resource and guardrails, Stubber for the failover moto
does not simulate, and a real PostgreSQL primary + standby behind a loopback "endpoint DNS name".

The real `FailoverDrill` runs unchanged; the platform's part (primary lost at the reboot call, standby
promoted and the endpoint moved when the scripted status says "available") happens on the local
servers, so RTO and lost writes are measured on real traffic with known ground truth.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from firedrill.aws.session import AwsSession
from firedrill.drills.base import DrillRun, Objectives
from firedrill.drills.failover import FailoverDrill, FailoverSettings
from firedrill.errors import DeadlineExceeded, TargetError
from firedrill.probes import ProbeConfig
from firedrill.run_context import RunContext
from firedrill.staging.postgres import DATABASE, SUPERUSER, PgStaging
from firedrill.targets.aws_rds import RdsFailoverTarget, connect_rds
from firedrill.targets.base import FaultKind, FaultSpec
from tests.aws.resources import STAGING, create_aurora, create_instance, db_instance, rds_event
from tests.aws.scripting import CallHooks, RdsInstanceScript
from tests.aws.tcp_proxy import TcpProxy

PASSWORD = "pw-must-never-appear-7f3a"  # the local servers trust loopback; this only travels
AZ_A, AZ_B = "eu-west-1a", "eu-west-1b"
FAST = FailoverSettings(
    baseline_s=0.5,
    settle_s=0.3,
    steady_timeout_s=5,
    recovery_timeout_s=20,
    promote_timeout_s=5,
    restore_timeout_s=5,
)


@pytest.fixture(scope="module")
def staging() -> Iterator[PgStaging]:
    with PgStaging() as s:
        yield s


@pytest.fixture
def pg(staging: PgStaging) -> Iterator[PgStaging]:
    yield staging
    staging.restore_topology(timeout_s=30)
    staging.wait_steady(max_lag_s=1, timeout_s=10)


@pytest.fixture
def proxy(pg: PgStaging) -> Iterator[TcpProxy]:
    with TcpProxy(("127.0.0.1", pg.primary.port)) as p:
        yield p


@pytest.fixture
def rds_settings(proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("FIREDRILL_TEST_PGPASSWORD", PASSWORD)
    return {
        "db_instance_id": "orders",
        "endpoint": proxy.endpoint,
        "dbname": DATABASE,
        "user": SUPERUSER,
        "password": {"env": "FIREDRILL_TEST_PGPASSWORD"},
        "sslmode": "disable",
    }


@pytest.fixture
def rds_session(session_for: Any, rds_settings: dict[str, Any]) -> AwsSession:
    session: AwsSession = session_for(rds=rds_settings)
    create_instance(session.rds(), "orders")
    return session


def _drill(
    target: RdsFailoverTarget, tmp_path: Path, scenario: str, settings: FailoverSettings = FAST
) -> FailoverDrill:
    run = DrillRun(
        drill="failover",
        scenario=scenario,
        ctx=RunContext(environment="aws-test", via="test", out_root=tmp_path),
        objectives=Objectives(max_lost_writes=0),
        probe_config=ProbeConfig(rate_hz=100),
    )
    return FailoverDrill(target, run, settings)


def _platform_fails_over(
    hooks: CallHooks, pg: PgStaging, proxy: TcpProxy, *, promote_on_describe: int
) -> None:
    """What RDS does to the servers: the primary dies at the reboot call; the standby is promoted and
    the endpoint follows it by the time DescribeDBInstances says available (its nth call overall)."""
    primary, standby = pg.primary, pg.standby

    def promote() -> None:
        pg.promote(standby, timeout_s=10)
        proxy.point_to(("127.0.0.1", standby.port))

    hooks.on_call("RebootDBInstance", lambda: pg.kill(primary))
    hooks.on_call("DescribeDBInstances", promote, nth=promote_on_describe)


def test_multi_az_failover_end_to_end_measures_rto_and_verifies_the_az_moved(
    rds_session: AwsSession, pg: PgStaging, proxy: TcpProxy, tmp_path: Path
) -> None:
    target = connect_rds(rds_session)  # guardrails and lookup against moto
    rds = rds_session.rds()
    stubber = Stubber(rds)
    now = datetime.now(UTC)
    started = rds_event("orders", "Multi-AZ instance failover started.", now)
    done = rds_event("orders", "Multi-AZ instance failover completed", now)
    script = RdsInstanceScript(stubber, db_instance, "orders")
    script.steady(AZ_A, AZ_B, 3)  # describe(), steady-state poll, steady-state observation
    script.describe("available", AZ_A, AZ_B).reboot(AZ_A, AZ_B)  # inject: observe, then reboot
    for _ in range(3):  # the platform is busy for three polls
        script.describe("rebooting", AZ_A, AZ_B).events(started)
    script.describe("available", AZ_B, AZ_A).events(started, done)  # 8th describe: done, AZ swapped
    script.steady(AZ_B, AZ_A, 3)  # promote's observation, restore_topology poll + observation
    hooks = CallHooks(rds)
    _platform_fails_over(hooks, pg, proxy, promote_on_describe=8)
    old_primary, standby = pg.primary.address, pg.standby.address

    with stubber:
        drill = _drill(target, tmp_path, "RDS Multi-AZ forced failover")
        drill.inject(FaultSpec(FaultKind.REBOOT_FAILOVER))
        drill.promote()
        record = drill.conclude()
        stubber.assert_no_pending_responses()  # every scripted call was made, in order

    m = record.measurements
    assert record.verdict == "passed", record.error
    assert m.outage_seen is True and m.recovered is True
    assert m.recovered_node == standby != old_primary
    # ground truth: no write could succeed between the kill and the promotion
    down_s = hooks.fired_at("DescribeDBInstances") - hooks.fired_at("RebootDBInstance")
    assert m.rto_s is not None and down_s <= m.rto_s < down_s + 2.0
    assert m.lost_writes == 0 and m.acknowledged_writes is not None and m.acknowledged_writes > 50
    promoted = next(e for e in record.timeline if e.kind == "promotion_done")
    assert f"writer AZ {AZ_A} -> {AZ_B}" in promoted.detail
    assert "failover completed" in promoted.detail
    fault = next(e for e in record.timeline if e.kind == "fault_returned")
    assert "ForceFailover=True" in fault.detail
    restored = next(c for c in record.checks if c.name == "topology restored")
    assert restored.passed and f"failover verified: writer AZ {AZ_A} -> {AZ_B}" in restored.detail
    env = record.environment
    assert env.kind == "aws" and env.settings["account"] == "123456789012"
    assert env.settings["password"] == "env:FIREDRILL_TEST_PGPASSWORD"
    assert env.settings["guardrail"] == "environment=staging"
    # the password went to the server, never into the evidence or the reports
    assert drill.run.evidence_path is not None
    for path in drill.run.evidence_path.parent.iterdir():
        assert PASSWORD not in path.read_text(errors="replace"), path
    assert json.loads(drill.run.evidence_path.read_text())["verdict"] == "passed"


def test_a_reboot_that_does_not_move_the_writer_fails_the_drill(
    rds_session: AwsSession, pg: PgStaging, tmp_path: Path
) -> None:
    target = connect_rds(rds_session)
    stubber = Stubber(rds_session.rds())
    script = RdsInstanceScript(stubber, db_instance, "orders")
    script.steady(AZ_A, AZ_B, 4).reboot(AZ_A, AZ_B)
    script.describe("rebooting", AZ_A, AZ_B).events()
    script.describe("available", AZ_A, AZ_B).events()  # back, same zone, no failover event
    script.describe("available", AZ_A, AZ_B)  # promote's final observation
    script.steady(AZ_A, AZ_B, 2)  # restore_topology, still run after the failure

    with stubber:
        drill = _drill(target, tmp_path, "reboot without failover")
        drill.inject(FaultSpec(FaultKind.REBOOT_FAILOVER))
        with pytest.raises(TargetError, match=r"the writer did not move") as caught:
            drill.promote()
        assert caught.value.code == "FailoverNotObserved"
        drill.run.record_failure(caught.value)
        record = drill.conclude()
        stubber.assert_no_pending_responses()

    assert record.verdict == "error"
    assert record.error is not None and f"writer AZ still {AZ_A}" in record.error
    assert drill.run.evidence_path is not None and drill.run.evidence_path.is_file()


def test_a_failover_past_its_deadline_aborts_and_topology_is_still_checked(
    session_for: Any, rds_settings: dict[str, Any], pg: PgStaging, tmp_path: Path
) -> None:
    session: AwsSession = session_for(rds=rds_settings, failover_timeout_s=0.4)
    create_instance(session.rds(), "orders")
    target = connect_rds(session)
    stubber = Stubber(session.rds())
    script = RdsInstanceScript(stubber, db_instance, "orders")
    script.steady(AZ_A, AZ_B, 4).reboot(AZ_A, AZ_B)
    for _ in range(200):  # more polls than the deadline allows: stuck rebooting
        script.describe("rebooting", AZ_A, AZ_B).events()
    settings = FailoverSettings(baseline_s=0.3, settle_s=0.1, steady_timeout_s=5, promote_timeout_s=0.2)
    drill = _drill(target, tmp_path, "stuck failover", settings)
    stubber.activate()
    drill.inject(FaultSpec(FaultKind.REBOOT_FAILOVER))
    with pytest.raises(DeadlineExceeded, match=r"failover: still status=rebooting .* after 0.4 s") as caught:
        drill.promote()
    stubber.deactivate()  # from here moto answers: the instance it holds is available and Multi-AZ
    drill.run.record_failure(caught.value)
    record = drill.conclude()
    assert record.verdict == "aborted"
    assert record.error is not None and "deadline" in record.error
    assert any(c.name == "topology restored" and c.passed for c in record.checks)


def test_aurora_failover_targets_a_reader_in_another_zone(
    session_for: Any, pg: PgStaging, proxy: TcpProxy, tmp_path: Path
) -> None:
    session: AwsSession = session_for(
        rds={
            "db_cluster_id": "ledger",
            "endpoint": proxy.endpoint,
            "dbname": DATABASE,
            "user": SUPERUSER,
            "sslmode": "disable",
        }
    )
    create_aurora(session.rds(), "ledger")
    target = connect_rds(session)
    rds = session.rds()
    stubber = Stubber(rds)

    def cluster(status: str, writer: str) -> None:
        members = [
            {"DBInstanceIdentifier": m, "IsClusterWriter": m == writer, "PromotionTier": 1}
            for m in ("ledger-1", "ledger-2")
        ]
        stubber.add_response(
            "describe_db_clusters",
            {
                "DBClusters": [
                    {
                        "DBClusterIdentifier": "ledger",
                        "Status": status,
                        "Engine": "aurora-postgresql",
                        "EngineVersion": "15.4",
                        "Endpoint": "ledger.cluster",
                        "Port": 5432,
                        "DBClusterMembers": members,
                        "TagList": STAGING,
                    }
                ]
            },
            {"DBClusterIdentifier": "ledger"},
        )
        rows = [
            db_instance("available", az, None, instance_id=m)
            for m, az in (("ledger-1", AZ_A), ("ledger-2", AZ_B))
        ]
        stubber.add_response(
            "describe_db_instances",
            {"DBInstances": rows},
            {"Filters": [{"Name": "db-cluster-id", "Values": ["ledger"]}]},
        )

    for _ in range(4):  # describe(), steady poll + observation, inject's observation
        cluster("available", "ledger-1")
    stubber.add_response(
        "failover_db_cluster",
        {"DBCluster": {"DBClusterIdentifier": "ledger", "Status": "failing-over"}},
        {"DBClusterIdentifier": "ledger", "TargetDBInstanceIdentifier": "ledger-2"},
    )
    events = {
        "Events": [
            rds_event(
                "ledger", "Completed failover to DB instance: ledger-2", datetime.now(UTC), "db-cluster"
            )
        ]
    }
    for status, writer in (("failing-over", "ledger-1"), ("available", "ledger-2")):
        cluster(status, writer)
        stubber.add_response(
            "describe_events",
            events,
            {"SourceIdentifier": "ledger", "SourceType": "db-cluster", "StartTime": ANY},
        )
    for _ in range(3):
        cluster("available", "ledger-2")
    hooks = CallHooks(rds)
    primary, standby = pg.primary, pg.standby

    def promote() -> None:
        pg.promote(standby, timeout_s=10)
        proxy.point_to(("127.0.0.1", standby.port))

    hooks.on_call("FailoverDBCluster", lambda: pg.kill(primary))
    hooks.on_call("DescribeDBClusters", promote, nth=6)

    with stubber:
        drill = _drill(target, tmp_path, "Aurora cluster failover")
        drill.inject(FaultSpec(FaultKind.REBOOT_FAILOVER))
        drill.promote()
        record = drill.conclude()
        stubber.assert_no_pending_responses()

    assert record.verdict == "passed", record.error
    assert record.measurements.lost_writes == 0
    assert record.measurements.recovered_node == standby.address
    promoted = next(e for e in record.timeline if e.kind == "promotion_done")
    assert f"writer ledger-1 -> ledger-2, AZ {AZ_A} -> {AZ_B}" in promoted.detail
