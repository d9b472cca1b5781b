"""RDS point-in-time restore drill end to end, and the temporary instance's lifecycle.

moto holds the source instance and creates/deletes the temporary one (it does not restore data). The
data is restored for real: when the adapter calls `restore_db_instance_to_point_in_time`, the local
staging restores its base backup + WAL archive to exactly the RestoreTime the adapter sent, and the
restored server stands behind the temporary instance's "endpoint". So the real `PitrDrill` verifies
real rows at the target the adapter chose.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from firedrill.aws.guardrails import TAG_EXPIRES, TAG_MANAGED, TAG_PURPOSE, TAG_RUN_ID, tag_dict
from firedrill.aws.session import AwsSession
from firedrill.drills.base import DrillRun
from firedrill.drills.pitr import PitrDrill, PitrObjectives, PitrSettings, TargetChoice
from firedrill.errors import DeadlineExceeded, GuardrailError
from firedrill.probes import ProbeConfig
from firedrill.run_context import RunContext
from firedrill.staging import pg_restore
from firedrill.staging.postgres import DATABASE, SUPERUSER, PgStaging
from firedrill.targets.aws_rds_restore import connect_rds_restore, temp_instance_id
from firedrill.targets.restore_base import (
    DisasterKind,
    RecoveryTarget,
    RefusalReason,
    RestoreRefused,
)
from tests.aws.conftest import recording_session
from tests.aws.resources import PRODUCTION, create_instance
from tests.aws.tcp_proxy import TcpProxy


@pytest.fixture(scope="module")
def staging() -> Iterator[PgStaging]:
    with PgStaging() as s:
        yield s


@pytest.fixture(scope="module")
def backup(staging: PgStaging) -> pg_restore.BaseBackup:
    return pg_restore.take_base_backup(staging, "base-aws-test")


@pytest.fixture
def restored_proxy() -> Iterator[TcpProxy]:
    with TcpProxy(("127.0.0.1", 1)) as p:  # points nowhere until a restore happens
        yield p


def _rds(staging: PgStaging, restored: TcpProxy, **restore: Any) -> dict[str, Any]:
    return {
        "db_instance_id": "orders",
        "endpoint": f"127.0.0.1:{staging.primary.port}",
        "dbname": DATABASE,
        "user": SUPERUSER,
        "sslmode": "disable",
        "restore": {"endpoint": restored.endpoint, **restore},
    }


class LocalRestores:
    """Plays RDS's data side: restore the local staging to the RestoreTime the adapter sent."""

    def __init__(
        self, session: AwsSession, staging: PgStaging, backup: pg_restore.BaseBackup, proxy: TcpProxy
    ):
        self.staging, self.backup, self.proxy = staging, backup, proxy
        self.requests: list[dict[str, Any]] = []
        self.deleted_tags: dict[str, dict[str, str]] = {}
        self.clusters: dict[str, pg_restore.RestoredCluster] = {}
        self._moto = AwsSession(session.settings)  # a second client, to look at moto's state
        events = session.rds().meta.events
        events.register("before-parameter-build.rds.RestoreDBInstanceToPointInTime", self._restore)
        events.register("before-parameter-build.rds.DeleteDBInstance", self._delete)

    def _restore(self, params: dict[str, Any], **_: Any) -> None:
        self.requests.append(dict(params))
        when: datetime = params["RestoreTime"]
        pg_restore.archive_wal(self.staging)
        target = RecoveryTarget.at_time(when.timestamp())
        name = params["TargetDBInstanceIdentifier"]
        cluster = pg_restore.restore(self.staging, self.backup, name, target.settings(), timeout_s=60)
        self.clusters[name] = cluster
        self.proxy.point_to(("127.0.0.1", cluster.port))

    def _delete(self, params: dict[str, Any], **_: Any) -> None:
        iid = params["DBInstanceIdentifier"]
        row = self._moto.rds().describe_db_instances(DBInstanceIdentifier=iid)["DBInstances"][0]
        self.deleted_tags[iid] = tag_dict(row.get("TagList"))
        cluster = self.clusters.pop(iid, None)
        if cluster is not None:
            cluster.stop()

    def stop_all(self) -> None:
        for cluster in self.clusters.values():
            cluster.stop()


def _temp_instances(session: AwsSession) -> list[str]:
    rows = AwsSession(session.settings).rds().describe_db_instances()["DBInstances"]
    return [r["DBInstanceIdentifier"] for r in rows if r["DBInstanceIdentifier"].startswith("firedrill-")]


def test_pitr_drill_end_to_end_restores_into_a_tagged_temporary_instance_and_deletes_it(
    session_for: Any,
    staging: PgStaging,
    backup: pg_restore.BaseBackup,
    restored_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    session: AwsSession = session_for(rds=_rds(staging, restored_proxy))
    create_instance(session.rds(), "orders")
    target = connect_rds_restore(session)
    restores = LocalRestores(session, staging, backup, restored_proxy)
    run = DrillRun(
        drill="pitr",
        scenario="RDS point-in-time restore after a dropped table",
        ctx=RunContext(environment="aws-test", via="test", out_root=tmp_path),
        objectives=PitrObjectives(rto_s=900, rpo_s=300, backup_max_age_s=86400),
        probe_config=ProbeConfig(rate_hz=50),
    )
    drill = PitrDrill(target, run, PitrSettings(baseline_s=0.5, settle_s=0.5, restore_timeout_s=60))
    try:
        drill.prepare_app_data("app_orders", 500)
        disaster = drill.disaster(DisasterKind.DROP_TABLE, "app_orders")
        drill.restore(TargetChoice.BEFORE_DISASTER)
        record = drill.conclude()
    finally:
        target.close()
        restores.stop_all()

    failed = [f"{c.name}: {c.detail}" for c in record.checks if not c.passed]
    assert record.verdict == "passed", (record.error, failed)
    names = {c.name for c in record.checks}
    assert {
        "every canary record committed before the target is present",
        "no canary record committed after the target is present",
        "table app_orders: row count as at the target",
        "table app_orders: content checksum as at the target",
        "restored server removed",
    } <= names
    m = record.measurements
    assert m.rto_s is not None and m.rto_s > 0
    assert m.rpo_window_s is not None and m.rpo_window_s < 1.0  # restored to just before the disaster
    # what the adapter asked RDS for
    (request,) = restores.requests
    iid = request["TargetDBInstanceIdentifier"]
    assert iid == temp_instance_id(run.run_id, 1) and iid.startswith("firedrill-")
    assert request["SourceDBInstanceIdentifier"] == "orders"
    assert abs(request["RestoreTime"].timestamp() - (disaster.commit_time - 1e-6)) < 1e-5
    assert request["MultiAZ"] is False and request["PubliclyAccessible"] is False
    # the temporary instance carried firedrill's tags while it existed, and is gone now
    tags = restores.deleted_tags[iid]
    assert (
        tags[TAG_MANAGED] == "true" and tags[TAG_RUN_ID] == run.run_id and tags[TAG_PURPOSE] == "pitr-restore"
    )
    assert tags["environment"] == "staging" and tags[TAG_EXPIRES].endswith("Z")
    assert _temp_instances(session) == []
    assert target.live_restores() == []
    assert record.environment.settings["backup_retention_days"] == "30 (promised 30)"


def test_a_restore_that_never_becomes_reachable_is_deleted_before_the_error_leaves(
    session_for: Any, staging: PgStaging
) -> None:
    session: AwsSession = session_for(
        rds={**_rds(staging, TcpProxy(("127.0.0.1", 1))), "restore": {"endpoint": "127.0.0.1:9"}}
    )
    create_instance(session.rds(), "orders")
    target = connect_rds_restore(session, run_id="run-unreachable")
    window = target.restore_window()
    with pytest.raises(
        DeadlineExceeded, match=r"firedrill-run-unreachable-1 is available but does not accept"
    ):
        target.restore_to(RecoveryTarget.at_time(window.latest_time - 1), timeout_s=1.0)
    assert _temp_instances(session) == []
    assert target.live_restores() == []


def test_an_interrupt_during_the_wait_still_deletes_the_temporary_instance(
    session_for: Any, staging: PgStaging, restored_proxy: TcpProxy
) -> None:
    session: AwsSession = session_for(rds=_rds(staging, restored_proxy))
    create_instance(session.rds(), "orders")
    target = connect_rds_restore(session, run_id="run-ctrl-c")
    window = target.restore_window()
    interrupted: list[str] = []

    def ctrl_c(params: dict[str, Any], **_: Any) -> None:
        iid = params.get("DBInstanceIdentifier", "")
        if iid.startswith("firedrill-") and not interrupted:
            interrupted.append(iid)
            raise KeyboardInterrupt

    session.rds().meta.events.register("before-parameter-build.rds.DescribeDBInstances", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        target.restore_to(RecoveryTarget.at_time(window.latest_time - 1), timeout_s=10)
    assert interrupted == ["firedrill-run-ctrl-c-1"]
    assert _temp_instances(session) == []


def test_close_deletes_what_the_drill_left(
    session_for: Any, staging: PgStaging, backup: pg_restore.BaseBackup, restored_proxy: TcpProxy
) -> None:
    session: AwsSession = session_for(rds=_rds(staging, restored_proxy))
    create_instance(session.rds(), "orders")
    target = connect_rds_restore(session, run_id="run-left")
    restores = LocalRestores(session, staging, backup, restored_proxy)
    try:
        point = target.recovery_point()
        target.prepare_app_data("app_left", 10)  # a commit after the point: WAL reaches past it
        target.restore_window()
        handle = target.restore_to(RecoveryTarget.at_time(point.time), timeout_s=60)
        assert _temp_instances(session) == [handle.name] == target.live_restores()
        target.close()  # the drill died before drop_restored
    finally:
        restores.stop_all()
    assert _temp_instances(session) == []
    assert target.drop_restored(handle) == f"{handle.name} already deleted"


@pytest.mark.parametrize(
    ("make", "reason", "message"),
    [
        (
            lambda w: RecoveryTarget.at_time(w.earliest_time - 60),
            RefusalReason.BEFORE_BACKUP,
            r"is before the earliest restorable time",
        ),
        (
            lambda w: RecoveryTarget.at_time(w.latest_time + 3600),
            RefusalReason.BEYOND_ARCHIVE,
            r"is after RDS's LatestRestorableTime",
        ),
        (
            lambda w: RecoveryTarget.before_lsn("0/3000148", w.latest_time),
            RefusalReason.UNSUPPORTED,
            r"RDS restores to a time only, not to a lsn",
        ),
    ],
)
def test_targets_outside_the_window_are_refused_before_anything_is_created(
    settings_for: Any,
    staging: PgStaging,
    restored_proxy: TcpProxy,
    make: Any,
    reason: RefusalReason,
    message: str,
) -> None:
    session, calls = recording_session(settings_for(rds=_rds(staging, restored_proxy)))
    create_instance(session.rds(), "orders")
    target = connect_rds_restore(session, run_id="run-refused")
    window = target.restore_window()
    with pytest.raises(RestoreRefused, match=message) as caught:
        target.restore_to(make(window), timeout_s=5)
    assert caught.value.reason is reason
    assert "RestoreDBInstanceToPointInTime" not in calls
    assert _temp_instances(session) == []


def test_backup_retention_below_the_promise_is_a_failed_check(
    session_for: Any, staging: PgStaging, restored_proxy: TcpProxy
) -> None:
    session: AwsSession = session_for(rds=_rds(staging, restored_proxy))
    session.rds().create_db_instance(
        DBInstanceIdentifier="orders",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        MasterUsername="app",
        MasterUserPassword="not-a-real-password",
        AllocatedStorage=20,
        MultiAZ=True,
        BackupRetentionPeriod=7,
        Tags=[{"Key": "environment", "Value": "staging"}],
    )
    checks = {c.name: c for c in connect_rds_restore(session).backup_checks()}
    retention = checks["backup retention covers the promised window"]
    assert not retention.passed and retention.detail == "BackupRetentionPeriod 7 days, promised 30 days"
    assert checks["LatestRestorableTime is recent"].passed


def test_production_tagged_source_is_refused(
    session_for: Any, staging: PgStaging, restored_proxy: TcpProxy
) -> None:
    session: AwsSession = session_for(rds=_rds(staging, restored_proxy))
    create_instance(session.rds(), "orders", tags=PRODUCTION)
    with pytest.raises(
        GuardrailError, match=r"^refused: RDS DB instance orders is tagged environment=production"
    ):
        connect_rds_restore(session)


def test_temporary_ids_are_valid_rds_identifiers() -> None:
    iid = temp_instance_id("20261125T212454Z-pitr-3d84ad", 2)
    assert iid == "firedrill-20261125t212454z-pitr-3d84ad-2"
    long = temp_instance_id("x" * 100 + "--__..", 12)
    assert len(long) <= 63 and long.endswith("-12") and "--" not in long
