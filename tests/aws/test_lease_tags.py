"""One drill per AWS resource: the `firedrill:lease` tag, against moto in server mode.

Another drill's lease is a tag written here as that drill would write it (another host, another pid);
ours is taken through the adapters' `drill_lease()` and the drills' own first steps.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from firedrill.aws.guardrails import tag_dict
from firedrill.aws.session import AwsSession
from firedrill.drills.base import DrillRun, Objectives
from firedrill.drills.failover import FailoverDrill, FailoverSettings
from firedrill.drills.pitr import PitrDrill, PitrObjectives
from firedrill.drills.plan import make_plan
from firedrill.probes import ProbeConfig
from firedrill.run_context import RunContext
from firedrill.targets.aws_elasticache import connect_elasticache
from firedrill.targets.aws_lease import TAG_LEASE, LeaseTag
from firedrill.targets.aws_rds import connect_rds
from firedrill.targets.aws_rds_restore import connect_rds_restore
from firedrill.targets.base import FaultKind, FaultSpec
from firedrill.targets.lease import Holder, LeaseBusy
from tests.aws.conftest import aws_profile, write_config
from tests.aws.resources import create_aurora, create_instance, create_replication_group

ROOT = Path(__file__).resolve().parents[2]
RDS = {"db_instance_id": "orders", "dbname": "app", "user": "firedrill", "sslmode": "disable"}
CACHE = {"replication_group_id": "sessions", "tls": False}
ALICE = Holder("alice", "ops-1", 4242, "20261202T150000Z-failover-abc123", "2026-12-02T15:00:00Z")
ALICE_LINE = (
    "is being drilled by alice@ops-1 (pid 4242, run 20261202T150000Z-failover-abc123, "
    "since 2026-12-02T15:00:00Z): one drill per target at a time"
)


def _rds_tags(session: AwsSession, arn_of: str = "orders") -> dict[str, str]:
    rds = AwsSession(session.settings).rds()
    arn = rds.describe_db_instances(DBInstanceIdentifier=arn_of)["DBInstances"][0]["DBInstanceArn"]
    return tag_dict(rds.list_tags_for_resource(ResourceName=arn)["TagList"])


def _tag_rds(session: AwsSession, value: str, instance: str = "orders") -> None:
    rds = AwsSession(session.settings).rds()
    arn = rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]["DBInstanceArn"]
    rds.add_tags_to_resource(ResourceName=arn, Tags=[{"Key": TAG_LEASE, "Value": value}])


def _alice(expires_in_s: float) -> str:
    return LeaseTag.of(ALICE, datetime.now(UTC) + timedelta(seconds=expires_in_s)).value()


def _run(tmp_path: Path, drill: str = "failover") -> DrillRun:
    return DrillRun(
        drill=drill,
        scenario="lease test",
        ctx=RunContext(environment="aws-test", via="test", out_root=tmp_path),
        objectives=PitrObjectives(rto_s=900, rpo_s=300) if drill == "pitr" else Objectives(),
        probe_config=ProbeConfig(rate_hz=10),
    )


@pytest.fixture
def rds_session(session_for: Any) -> AwsSession:
    session: AwsSession = session_for(rds=RDS)
    create_instance(session.rds(), "orders")
    return session


def test_the_tag_value_uses_only_characters_rds_and_elasticache_allow() -> None:
    odd = Holder("a|b c", "host|with spaces/and.slash", 99, "run/with|pipes", "2026-12-02T15:00:00Z")
    value = LeaseTag.of(odd, datetime(2026, 12, 2, 15, 5, tzinfo=UTC)).value()
    allowed = set("_.:/=+-@ ")
    assert all(c.isalnum() or c in allowed for c in value), value
    assert len(value) <= 256 and "|" not in value
    parsed = LeaseTag.parse(value)
    assert parsed is not None and parsed.holder.pid == 99
    assert parsed.holder.host == "host_with_spaces_and.slash"
    assert parsed.expires == datetime(2026, 12, 2, 15, 5, tzinfo=UTC)
    long = Holder("u" * 300, "h" * 300, 2**31, "r" * 300, "2026-12-02T15:00:00Z")
    assert len(LeaseTag.of(long, datetime.now(UTC)).value()) <= 256
    assert LeaseTag.parse("not a lease") is None and LeaseTag.parse("a/b/c/d/e") is None


def test_a_second_failover_drill_is_refused_in_one_line_naming_the_holder(
    rds_session: AwsSession, tmp_path: Path
) -> None:
    theirs = _alice(300)
    _tag_rds(rds_session, theirs)
    target = connect_rds(rds_session)
    drill = FailoverDrill(target, _run(tmp_path), FailoverSettings(steady_timeout_s=1))
    with pytest.raises(LeaseBusy) as info:
        drill.inject(FaultSpec(FaultKind.REBOOT_FAILOVER))  # the lease comes first: no failover issued
    assert str(info.value) == f"RDS DB instance orders {ALICE_LINE}"
    assert "\n" not in str(info.value)
    assert drill.run.fault is None
    assert _rds_tags(rds_session)[TAG_LEASE] == theirs  # alice's, untouched


def test_our_lease_is_tagged_renewed_and_released_without_touching_other_tags(
    rds_session: AwsSession,
) -> None:
    lease = connect_rds(rds_session).drill_lease()
    me = Holder.me("20261202T160000Z-failover-def456")
    assert lease.acquire(me) is None  # free: nothing to say
    tag = LeaseTag.parse(_rds_tags(rds_session)[TAG_LEASE])
    assert tag is not None and tag.is_of(me) and tag.holder.pid == os.getpid()
    assert timedelta(seconds=290) < tag.expires - datetime.now(UTC) <= timedelta(seconds=300)
    with pytest.raises(LeaseBusy, match=r"RDS DB instance orders is being drilled by .*def456"):
        connect_rds(rds_session).drill_lease().acquire(ALICE)
    lease.clock = lambda: datetime.now(UTC) + timedelta(seconds=100)
    assert lease.renew(me)
    renewed = LeaseTag.parse(_rds_tags(rds_session)[TAG_LEASE])
    assert renewed is not None and renewed.expires - tag.expires >= timedelta(seconds=99)
    lease.release(me)
    assert _rds_tags(rds_session) == {"environment": "staging"}  # only the lease tag went


def test_release_and_renewal_leave_another_drills_tag_alone(rds_session: AwsSession) -> None:
    lease = connect_rds(rds_session).drill_lease()
    me = Holder.me("20261202T160000Z-failover-mine01")
    lease.acquire(me)
    _tag_rds(rds_session, _alice(300))  # last writer wins: another drill overwrote ours
    assert lease.renew(me) is False  # never renewed over it
    lease.release(me)
    assert LeaseTag.parse(_rds_tags(rds_session)[TAG_LEASE]).holder.user == "alice"  # type: ignore[union-attr]


def test_a_lease_tag_that_cannot_be_read_is_refused_not_overwritten(rds_session: AwsSession) -> None:
    _tag_rds(rds_session, "someone wrote this by hand")
    with pytest.raises(LeaseBusy, match="carries a firedrill:lease tag firedrill cannot read"):
        connect_rds(rds_session).drill_lease().acquire(Holder.me("run-x"))
    assert _rds_tags(rds_session)[TAG_LEASE] == "someone wrote this by hand"


def test_a_racing_writer_seen_on_the_read_back_makes_us_back_off(rds_session: AwsSession) -> None:
    lease = connect_rds(rds_session).drill_lease()
    real_write = lease.tags.write

    def write_then_lose(value: str) -> None:
        real_write(value)
        _tag_rds(rds_session, _alice(300))  # alice read "free" too, and wrote after us

    lease.tags.write = write_then_lose  # type: ignore[method-assign]
    with pytest.raises(LeaseBusy, match="alice@ops-1"):
        lease.acquire(Holder.me("20261202T160000Z-failover-racer1"))


def test_an_expired_lease_is_taken_over_and_the_evidence_says_whose(
    rds_session: AwsSession, tmp_path: Path
) -> None:
    _tag_rds(rds_session, _alice(-60))  # alice's drill died a minute after its lease expired
    target = connect_rds_restore(rds_session, resolve_secrets=False)
    drill = PitrDrill(target, _run(tmp_path, "pitr"))
    drill.check_backup()  # the drill's first step takes the lease
    held = LeaseTag.parse(_rds_tags(rds_session)[TAG_LEASE])
    assert held is not None and held.holder.run_id == drill.run.run_id  # the source instance is ours now
    record = drill.conclude()
    note = next(e.detail for e in record.timeline if "drill lease" in e.detail)
    assert "drill lease of RDS DB instance orders taken" in note
    assert "an expired lease of alice@ops-1 (pid 4242, run 20261202T150000Z-failover-abc123" in note
    assert "was taken over" in note
    assert TAG_LEASE not in _rds_tags(rds_session)  # released once the evidence was written


def test_a_second_pitr_drill_on_the_same_source_is_refused(rds_session: AwsSession, tmp_path: Path) -> None:
    _tag_rds(rds_session, _alice(300))
    drill = PitrDrill(connect_rds_restore(rds_session, resolve_secrets=False), _run(tmp_path, "pitr"))
    with pytest.raises(LeaseBusy, match=re.escape(f"RDS DB instance orders {ALICE_LINE}")):
        drill.check_backup()


def test_the_aurora_lease_is_a_tag_on_the_cluster(session_for: Any) -> None:
    session: AwsSession = session_for(rds={**RDS, "db_instance_id": None, "db_cluster_id": "ledger"})
    create_aurora(session.rds(), "ledger")
    lease = connect_rds(session).drill_lease()
    me = Holder.me("20261202T160000Z-failover-aurora")
    lease.acquire(me)
    rds = AwsSession(session.settings).rds()
    arn = rds.describe_db_clusters(DBClusterIdentifier="ledger")["DBClusters"][0]["DBClusterArn"]
    assert TAG_LEASE in tag_dict(rds.list_tags_for_resource(ResourceName=arn)["TagList"])
    with pytest.raises(LeaseBusy, match="Aurora cluster ledger is being drilled by"):
        connect_rds(session).drill_lease().acquire(ALICE)
    lease.release(me)
    assert TAG_LEASE not in tag_dict(rds.list_tags_for_resource(ResourceName=arn)["TagList"])


def test_the_elasticache_lease_is_a_tag_on_the_replication_group(session_for: Any) -> None:
    session: AwsSession = session_for(elasticache=CACHE)
    arn = create_replication_group(session.elasticache(), "sessions")["ARN"]
    ec = AwsSession(session.settings).elasticache()
    ec.add_tags_to_resource(ResourceName=arn, Tags=[{"Key": TAG_LEASE, "Value": _alice(300)}])
    with pytest.raises(LeaseBusy) as info:
        connect_elasticache(session, resolve_secrets=False).drill_lease().acquire(Holder.me("run-2"))
    assert str(info.value) == f"ElastiCache replication group sessions {ALICE_LINE}"
    ec.remove_tags_from_resource(ResourceName=arn, TagKeys=[TAG_LEASE])  # alice's drill ended
    lease = connect_elasticache(session, resolve_secrets=False).drill_lease()
    me = Holder.me("20261202T160000Z-cache-failover-fff000")
    lease.acquire(me)
    tags = tag_dict(ec.list_tags_for_resource(ResourceName=arn)["TagList"])
    assert LeaseTag.parse(tags[TAG_LEASE]).is_of(me)  # type: ignore[union-attr]
    lease.release(me)
    assert tag_dict(ec.list_tags_for_resource(ResourceName=arn)["TagList"]) == {"environment": "staging"}


@pytest.mark.parametrize(
    ("drill", "add", "remove"),
    [
        ("failover", "rds:AddTagsToResource orders", "rds:RemoveTagsFromResource orders"),
        ("pitr", "rds:AddTagsToResource orders", "rds:RemoveTagsFromResource orders"),
        (
            "cache-failover",
            "elasticache:AddTagsToResource sessions",
            "elasticache:RemoveTagsFromResource sessions",
        ),
    ],
)
def test_the_plan_lists_the_lease_tag_written_first_and_removed_last(
    session_for: Any, drill: str, add: str, remove: str
) -> None:
    settings = session_for(rds=RDS, elasticache=CACHE).settings
    session = AwsSession(settings)
    create_instance(session.rds(), "orders")
    create_replication_group(session.elasticache(), "sessions")
    plan = make_plan(drill, aws_profile(settings), session)
    first, last = plan.changes[0].line(), plan.changes[-1].line()
    value = "<run id>/<user@host>/<pid>/<since>/<expires>"
    assert first.startswith(f"[aws] {add}: tag firedrill:lease = {value}")
    assert "written again every 75 s with a new expiry (ttl 300 s)" in first
    after = "only if still this run's, once the evidence is written"
    assert last == f"[aws] {remove}: tag firedrill:lease, {after}"
    assert TAG_LEASE not in _rds_tags(session)  # a plan writes no tag


def test_the_cli_refuses_a_second_drill_in_one_line_with_exit_2(
    rds_session: AwsSession, tmp_path: Path
) -> None:
    _tag_rds(rds_session, _alice(300))
    cfg = write_config(tmp_path / "firedrill.toml", aws_profile(rds_session.settings, name="aws-test"))
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "firedrill.cli.main", "run", "failover", "--env", "aws-test", "--quiet"),
            *("--config", str(cfg), "--out", str(tmp_path / "out"), "-k", "forced"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-2000:]
    refusal = f"RDS DB instance orders {ALICE_LINE}"
    assert f"firedrill: error: {refusal}" in proc.stderr.splitlines(), proc.stderr[-2000:]
    assert f"  error: {refusal}" in proc.stdout.splitlines()  # the scenario's summary, one line too
    (evidence,) = (tmp_path / "out").glob("*/evidence.json")
    record = json.loads(evidence.read_text())
    assert record["verdict"] == "error" and record["fault"] is None  # nothing was failed over
    assert LeaseTag.parse(_rds_tags(rds_session)[TAG_LEASE]).holder.user == "alice"  # type: ignore[union-attr]
