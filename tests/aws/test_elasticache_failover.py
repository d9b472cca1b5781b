"""ElastiCache failover drill end to end: moto for the group and its tags, Stubber for the
`test_failover` moto does not implement, and two real redis-servers (master + replica, free ports,
never 6379) behind a loopback "primary endpoint"."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from botocore.stub import ANY, Stubber

from firedrill.aws.session import AwsSession
from firedrill.drills.base import DrillRun, Objectives
from firedrill.drills.failover import FailoverDrill, FailoverSettings
from firedrill.errors import GuardrailError, SteadyStateNotMet
from firedrill.probes import ProbeConfig
from firedrill.run_context import RunContext
from firedrill.staging.common import free_port, wait_until
from firedrill.targets.aws_elasticache import ElastiCacheFailoverTarget, connect_elasticache
from firedrill.targets.base import FaultKind, FaultSpec
from tests.aws.resources import PRODUCTION, create_replication_group
from tests.aws.scripting import CallHooks
from tests.aws.tcp_proxy import TcpProxy

AZ_A, AZ_B = "eu-west-1a", "eu-west-1b"


class RedisPair:
    """A master and its replica, plain redis-server processes in a temp dir."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="firedrill-test-redis-"))
        self.ports = [free_port(), free_port()]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> RedisPair:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        for i, port in enumerate(self.ports):
            args = [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--dbfilename",
                f"{port}.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ]
            if i == 1:
                args += ["--replicaof", "127.0.0.1", str(self.ports[0])]
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            wait_until(f"redis {port}", lambda p=port: self._ping(p), timeout_s=10)
        wait_until("replica link up", self.in_sync, timeout_s=15)
        return self

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, decode_responses=True)

    def _ping(self, port: int) -> bool:
        try:
            return bool(self.client(port).ping())
        except redis.RedisError:
            return False

    def master_port(self) -> int:
        return next(p for p in self.ports if self.client(p).info("replication")["role"] == "master")

    def in_sync(self) -> bool:
        master = self.master_port()
        replica = next(p for p in self.ports if p != master)
        rinfo = self.client(replica).info("replication")
        minfo = self.client(master).info("replication")
        return bool(
            rinfo.get("master_link_status") == "up"
            and rinfo.get("slave_repl_offset") == minfo.get("master_repl_offset")
        )

    def fail_over(self) -> int:
        """What ElastiCache does: stop writes on the primary, let the replica catch up, promote it,
        make the old primary its replica. Returns the new master's port."""
        old = self.master_port()
        new = next(p for p in self.ports if p != old)
        self.client(new).replicaof("NO", "ONE")
        self.client(old).replicaof("127.0.0.1", new)
        self.client(old).execute_command("CLIENT", "UNPAUSE")
        return new

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def pair() -> Iterator[RedisPair]:
    p = RedisPair()
    try:
        yield p.start()
    finally:
        p.stop()


@pytest.fixture
def cache_session(session_for: Any, pair: RedisPair) -> Iterator[tuple[AwsSession, TcpProxy]]:
    with TcpProxy(("127.0.0.1", pair.ports[0])) as proxy:
        session: AwsSession = session_for(
            elasticache={"replication_group_id": "sessions", "endpoint": proxy.endpoint, "tls": False}
        )
        yield session, proxy


def group(status: str, primary: str) -> dict[str, Any]:
    members = [
        {
            "CacheClusterId": cid,
            "CacheNodeId": "0001",
            "CurrentRole": "primary" if cid == primary else "replica",
            "PreferredAvailabilityZone": az,
        }
        for cid, az in (("sessions-001", AZ_A), ("sessions-002", AZ_B))
    ]
    return {
        "ReplicationGroups": [
            {
                "ReplicationGroupId": "sessions",
                "Status": status,
                "AutomaticFailover": "enabled",
                "MultiAZ": "enabled",
                "CacheNodeType": "cache.t3.micro",
                "ClusterEnabled": False,
                "NodeGroups": [
                    {
                        "NodeGroupId": "0001",
                        "Status": status,
                        "PrimaryEndpoint": {"Address": "master.sessions.cache", "Port": 6379},
                        "NodeGroupMembers": members,
                    }
                ],
            }
        ]
    }


def _drill(target: ElastiCacheFailoverTarget, tmp_path: Path) -> FailoverDrill:
    run = DrillRun(
        drill="cache-failover",
        scenario="ElastiCache test failover",
        ctx=RunContext(environment="aws-test", via="test", out_root=tmp_path),
        objectives=Objectives(max_lost_writes=0),
        probe_config=ProbeConfig(rate_hz=100, op_timeout_s=0.3),
    )
    settings = FailoverSettings(
        baseline_s=0.5,
        settle_s=0.3,
        steady_timeout_s=5,
        recovery_timeout_s=20,
        promote_timeout_s=5,
        restore_timeout_s=5,
    )
    return FailoverDrill(target, run, settings)


def test_test_failover_end_to_end_moves_the_primary_and_loses_nothing(
    cache_session: tuple[AwsSession, TcpProxy], pair: RedisPair, tmp_path: Path
) -> None:
    session, proxy = cache_session
    create_replication_group(session.elasticache(), "sessions")
    target = connect_elasticache(session)  # guardrails and lookup against moto
    ec = session.elasticache()
    stubber = Stubber(ec)
    rg = {"ReplicationGroupId": "sessions"}
    for _ in range(4):  # describe(), steady-state poll + observation, inject's observation
        stubber.add_response("describe_replication_groups", group("available", "sessions-001"), rg)
    stubber.add_response(
        "test_failover",
        {"ReplicationGroup": {"ReplicationGroupId": "sessions"}},
        {"ReplicationGroupId": "sessions", "NodeGroupId": "0001"},
    )
    now = datetime.now(UTC)
    called = {
        "SourceIdentifier": "sessions",
        "SourceType": "replication-group",
        "Message": "Test Failover API called for node group 0001",
        "Date": now,
    }
    done = {
        **called,
        "Message": "Failover from primary node sessions-001 to replica node sessions-002 completed",
    }
    ev = {"SourceIdentifier": "sessions", "SourceType": "replication-group", "StartTime": ANY}
    for _ in range(3):
        stubber.add_response("describe_replication_groups", group("modifying", "sessions-001"), rg)
        stubber.add_response("describe_events", {"Events": [called]}, ev)
    stubber.add_response("describe_replication_groups", group("available", "sessions-002"), rg)  # 8th
    stubber.add_response("describe_events", {"Events": [called, done]}, ev)
    for _ in range(3):  # promote's observation, restore_topology poll + observation
        stubber.add_response("describe_replication_groups", group("available", "sessions-002"), rg)

    hooks = CallHooks(ec)
    old_master = pair.ports[0]
    # the primary stops taking writes when the test failover starts ...
    hooks.on_call(
        "TestFailover", lambda: pair.client(old_master).execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    )

    def promoted() -> None:  # ... and the replica is primary, DNS moved, when ElastiCache says so
        wait_until("replica caught up", pair.in_sync, timeout_s=5)
        proxy.point_to(("127.0.0.1", pair.fail_over()))

    hooks.on_call("DescribeReplicationGroups", promoted, nth=8)

    with stubber:
        drill = _drill(target, tmp_path)
        drill.inject(FaultSpec(FaultKind.TEST_FAILOVER))
        drill.promote()
        record = drill.conclude()
        stubber.assert_no_pending_responses()

    m = record.measurements
    assert record.verdict == "passed", record.error
    assert m.outage_seen is True and m.failed_writes and m.failed_writes > 0
    assert m.recovered_node == f"127.0.0.1:{pair.ports[1]}"
    down_s = hooks.fired_at("DescribeReplicationGroups") - hooks.fired_at("TestFailover")
    assert m.rto_s is not None and down_s <= m.rto_s < down_s + 2.0
    assert m.lost_writes == 0 and m.acknowledged_writes is not None and m.acknowledged_writes > 50
    promoted_event = next(e for e in record.timeline if e.kind == "promotion_done")
    assert f"primary sessions-001 ({AZ_A}) -> sessions-002 ({AZ_B})" in promoted_event.detail
    assert "completed" in promoted_event.detail
    assert record.environment.settings["guardrail"] == "environment=staging"
    # every acknowledged write is in the canary hash on the new master, and the key will expire
    key = f"firedrill:canary:{drill.run.run_id}"
    assert pair.client(pair.ports[1]).zcard(key) >= m.acknowledged_writes
    assert 0 < pair.client(pair.ports[1]).ttl(key) <= 7 * 86400


def test_steady_state_needs_a_connected_replica(
    cache_session: tuple[AwsSession, TcpProxy], pair: RedisPair
) -> None:
    session, _ = cache_session
    create_replication_group(session.elasticache(), "sessions")
    target = connect_elasticache(session)
    pair.client(pair.ports[1]).replicaof("NO", "ONE")  # the replica leaves: no failover is safe now
    stubber = Stubber(session.elasticache())
    for _ in range(2):
        stubber.add_response(
            "describe_replication_groups",
            group("available", "sessions-001"),
            {"ReplicationGroupId": "sessions"},
        )
    with stubber, pytest.raises(SteadyStateNotMet, match="has no connected replica"):
        target.check_steady_state(max_lag_s=1, timeout_s=1)


def test_production_tagged_replication_group_is_refused(session_for: Any) -> None:
    session: AwsSession = session_for(elasticache={"replication_group_id": "sessions", "tls": False})
    create_replication_group(session.elasticache(), "sessions", tags=PRODUCTION)
    with pytest.raises(
        GuardrailError,
        match=r"^refused: ElastiCache replication group sessions is tagged "
        r"environment=production \(production\); nothing was changed$",
    ):
        connect_elasticache(session)


def test_probe_session_records_the_serving_node_and_fails_fast(pair: RedisPair) -> None:
    from firedrill.targets.aws_elasticache import RedisCanarySession, RedisEndpoint

    ep = RedisEndpoint(host="127.0.0.1", port=pair.ports[0], tls=False)
    s = RedisCanarySession(ep, "run-x", ProbeConfig(op_timeout_s=0.2))
    assert s.write(1) == f"127.0.0.1:{pair.ports[0]}"
    s.close()
    replica = RedisCanarySession(
        RedisEndpoint(host="127.0.0.1", port=pair.ports[1], tls=False), "run-x", ProbeConfig(op_timeout_s=0.2)
    )
    from firedrill.errors import ProbeFailure

    with pytest.raises(ProbeFailure) as caught:
        replica.write(2)
    assert caught.value.probe_error == "ReadOnly"
    pair.client(pair.ports[0]).execute_command("CLIENT", "PAUSE", "2000", "WRITE")
    slow = RedisCanarySession(ep, "run-x", ProbeConfig(op_timeout_s=0.2))
    t0 = time.monotonic()
    with pytest.raises(ProbeFailure) as caught:
        slow.write(3)
    assert caught.value.probe_error == "Timeout" and time.monotonic() - t0 < 1.0
