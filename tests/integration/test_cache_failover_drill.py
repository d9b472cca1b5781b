"""The cache failover and AOF persistence drills end to end on real redis-server processes (no mocks).

The failover tests share one staging and run in file order; each starts with the drill's own
steady-state check, so they also prove that restoring the topology readies the next one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from firedrill.config import Profile
from firedrill.drills.base import DrillRun, Objectives
from firedrill.drills.cache_persistence import (
    CachePersistenceDrill,
    PersistenceSettings,
    restart_outage,
    survivors,
)
from firedrill.drills.failover import FailoverDrill, FailoverSettings
from firedrill.errors import ConfigError, HarnessError, ProbeFailure, TargetError
from firedrill.probes import ProbeConfig
from firedrill.run_context import RunContext
from firedrill.staging.common import free_port, pid_alive
from firedrill.staging.redis_sentinel import RedisSentinelStaging
from firedrill.targets.base import FaultKind, FaultSpec
from firedrill.targets.factory import open_target
from firedrill.targets.local_redis import LocalRedisTarget, address, aof_config, open_local_redis
from firedrill.targets.redis_canary import RedisCanarySession, SentinelEndpoint, probe_error_class
from firedrill.timeline import Event, EventKind, Op, Sample

pytestmark = [
    pytest.mark.redis,
    pytest.mark.local,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]

FAST = FailoverSettings(baseline_s=0.5, settle_s=0.3, steady_timeout_s=20, recovery_timeout_s=30)
SPLIT_BRAIN_CHECK = "no write acknowledged by a failed node after the fault is lost"


@pytest.fixture(scope="module")
def staging() -> Iterator[RedisSentinelStaging]:
    with RedisSentinelStaging() as s:
        yield s


def _run(
    tmp_path: Path, scenario: str, objectives: Objectives, rate_hz: float = 100, drill: str = "cache-failover"
) -> DrillRun:
    return DrillRun(
        drill=drill,
        scenario=scenario,
        ctx=RunContext(environment="local", via="test", out_root=tmp_path),
        objectives=objectives,
        probe_config=ProbeConfig(rate_hz=rate_hz),
    )


def _failover(
    staging: RedisSentinelStaging, tmp_path: Path, scenario: str, objectives: Objectives
) -> FailoverDrill:
    return FailoverDrill(LocalRedisTarget(staging), _run(tmp_path, scenario, objectives), FAST)


# ---- canary session and error classes -----------------------------------------------------------
def test_canary_session_names_the_serving_master_and_reads_back(staging: RedisSentinelStaging) -> None:
    staging.wait_steady(timeout_s=20)
    target = LocalRedisTarget(staging)
    target.prepare_canary("t-session")
    session = target.session_factory("t-session", ProbeConfig())()
    try:
        nodes = {session.write(seq) for seq in range(1, 6)}
    finally:
        session.close()
    assert nodes == {address(staging.current_master())}
    assert target.read_back("t-session") == frozenset(range(1, 6))

    wrong = RedisCanarySession(
        SentinelEndpoint(tuple(staging.sentinel_addresses()), "no-such-master"), "t", ProbeConfig()
    )
    with pytest.raises(ProbeFailure) as failed:
        wrong.write(1)
    wrong.close()
    assert failed.value.probe_error == "MasterNotFound"


def test_redis_errors_get_short_classes(staging: RedisSentinelStaging) -> None:
    staging.wait_steady(timeout_s=20)
    replica = next(n for n in staging.nodes if n != staging.current_master())
    with redis.Redis(port=replica.port, socket_timeout=0.2, protocol=2) as client:
        with pytest.raises(redis.ReadOnlyError) as ro:
            client.set("firedrill:x", "1")
        assert probe_error_class(ro.value) == "ReadOnly"
        staging.freeze(replica)  # well under down-after: Sentinel does not notice
        try:
            with pytest.raises(redis.TimeoutError) as slow:
                client.ping()
        finally:
            staging.thaw(replica)
        assert probe_error_class(slow.value) == "Timeout"
    with redis.Redis(port=free_port(), socket_connect_timeout=0.2, protocol=2) as nobody:
        with pytest.raises(redis.ConnectionError) as refused:
            nobody.ping()
        assert probe_error_class(refused.value) == "ConnectionRefused"
    assert probe_error_class(redis.ConnectionError("The previous master is now a slave")) == "ReadOnly"
    assert (
        probe_error_class(redis.ResponseError("NOREPLICAS Not enough good replicas to write."))
        == "NoReplicas"
    )


# ---- failover drills ----------------------------------------------------------------------------
def test_kill_master_sentinel_promotes_and_nothing_is_lost(
    staging: RedisSentinelStaging, tmp_path: Path
) -> None:
    old = staging.current_master()
    drill = _failover(staging, tmp_path, "kill", Objectives(max_lost_writes=0))
    drill.inject(FaultSpec(FaultKind.KILL))
    drill.promote()
    record = drill.conclude()
    m = record.measurements
    assert record.verdict == "passed", (record.error, record.checks)
    assert m.recovered and m.recovered_node and m.recovered_node != address(old)
    # down-after is 1 s: no promotion before it; on loopback it takes 2-3 s
    assert m.rto_s is not None and 1.0 < m.rto_s < 15, m
    assert m.lost_writes == 0 and m.acknowledged_writes and m.acknowledged_writes > 20, m
    assert record.probe_stats is not None
    # the outage is seen and classified: the dead port, then no master while Sentinel decides
    assert {"ConnectionRefused", "MasterNotFound"} & set(record.probe_stats.errors), record.probe_stats
    assert [p.name for p in m.phases if p.name == "promotion"]
    assert drill.run.evidence_path is not None
    assert json.loads(drill.run.evidence_path.read_text())["run_id"] == record.run_id
    assert (drill.run.evidence_path.parent / "report.html").is_file()
    assert {n.role for n in record.environment.nodes} >= {"master", "replica", "sentinel"}
    assert record.environment.settings["down_after_milliseconds"] == "1000"
    # restored: the killed node is back, as a replica of the new master
    assert address(staging.current_master()) == m.recovered_node
    assert old.role == "replica"


def test_switchover_split_brain_is_measured_not_hidden(staging: RedisSentinelStaging, tmp_path: Path) -> None:
    """Sentinel leaves the old master writable ~10 s after SENTINEL FAILOVER; the probe, still
    connected to it, gets acknowledgements that the resync then throws away."""
    old = staging.current_master()
    drill = _failover(staging, tmp_path, "switchover", Objectives())
    drill.inject(FaultSpec(FaultKind.SWITCHOVER))
    drill.promote()
    record = drill.conclude()
    m = record.measurements
    assert record.error is None
    stale = m.extra["stale_acks"]
    assert isinstance(stale, int) and stale > 0
    assert m.lost_writes is not None and 0 < m.lost_writes <= stale
    assert m.rpo_window_s is not None and 1.0 < m.rpo_window_s < 300
    assert m.recovered_node != address(old)
    split = next(c for c in record.checks if c.name == SPLIT_BRAIN_CHECK)
    assert not split.passed and "split brain" in split.detail
    # No zero-loss objective in this scenario: the loss is a finding, the RPO objective judges it.
    assert not split.blocking
    assert record.verdict == "passed"
    assert {v.objective: v.met for v in record.verdicts} == {"rto": True, "rpo": True}
    assert old.role == "replica"


def test_freeze_past_down_after_fails_over_while_frozen(
    staging: RedisSentinelStaging, tmp_path: Path
) -> None:
    old = staging.current_master()
    drill = _failover(staging, tmp_path, "freeze", Objectives(max_lost_writes=0))
    drill.inject(FaultSpec(FaultKind.FREEZE, duration_s=4.5))
    drill.promote()
    record = drill.conclude()
    m = record.measurements
    assert record.verdict == "passed", (record.error, record.checks)
    assert m.recovered_node and m.recovered_node != address(old)
    # Ground truth: down-after is 1 s, so no recovery before that, and Sentinel promotes while the
    # old master is still stopped.
    assert m.rto_s is not None and 1.0 < m.rto_s < 4.5
    # An ack between issuing the fault and the SIGSTOP landing counts as stale; none may be lost.
    assert m.lost_writes == 0
    assert next(c for c in record.checks if c.name == SPLIT_BRAIN_CHECK).passed
    assert old.role == "replica"


def test_bad_faults_are_refused_before_anything_happens(
    staging: RedisSentinelStaging, tmp_path: Path
) -> None:
    master = staging.current_master()
    with pytest.raises(ConfigError, match="not longer than down-after-milliseconds"):
        LocalRedisTarget(staging).inject(FaultSpec(FaultKind.FREEZE, duration_s=0.5))
    drill = _failover(staging, tmp_path, "stop", Objectives())
    with pytest.raises(HarnessError, match="supported: freeze, kill, switchover"):
        drill.inject(FaultSpec(FaultKind.STOP))
    assert master.role == "master" and not staging.is_frozen(master)


def test_persistence_drill_refuses_a_master_without_aof(
    staging: RedisSentinelStaging, tmp_path: Path
) -> None:
    master = staging.current_master()
    run = _run(tmp_path, "no aof", Objectives(max_lost_writes=0), drill="cache-persistence")
    drill = CachePersistenceDrill(LocalRedisTarget(staging), run, "always")
    with pytest.raises(TargetError, match="appendonly no"):
        drill.crash_and_restart(10)
    drill.run.record_failure(TargetError("appendonly no"))  # what the step-error hook does
    record = drill.conclude()
    assert record.verdict == "error" and survivors(record) is None
    assert not next(c for c in record.checks if c.name == "AOF persistence as configured").passed
    assert staging.current_master() == master and master.pid is not None  # nothing was killed


# ---- AOF persistence ----------------------------------------------------------------------------
def test_aof_always_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    with open_local_redis(aof_config("always")) as target:
        node = target.master_address()
        run = _run(
            tmp_path, "aof always", Objectives(max_lost_writes=0), rate_hz=500, drill="cache-persistence"
        )
        drill = CachePersistenceDrill(target, run, "always", PersistenceSettings(settle_s=0.2))
        drill.crash_and_restart(300)
        assert target.master_address() == node
    record = drill.conclude()
    m = record.measurements
    assert record.verdict == "passed", (record.error, record.checks)
    n = m.extra["aof_acknowledged_before_crash"]
    assert isinstance(n, int) and n >= 300
    assert m.extra["aof_survivors"] == n and m.lost_writes == 0
    assert survivors(record) == f"{n}/{n}"
    assert m.recovered_node == node and m.rto_s is not None and 0 < m.rto_s < 10
    assert [p.name for p in m.phases][:2] == ["kill", "restart"]


def test_bad_persistence_input_is_one_clear_line(staging: RedisSentinelStaging, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="appendfsync must be always, everysec or no, not 'sometimes'"):
        aof_config("sometimes")
    run = _run(tmp_path, "bad", Objectives(), drill="cache-persistence")
    drill = CachePersistenceDrill(LocalRedisTarget(staging), run, "always")
    with pytest.raises(ConfigError, match="at least 1 acknowledged write"):
        drill.crash_and_restart(0)


def test_restart_outage_splits_acks_at_the_kill() -> None:
    """A retrying client can hide a fast restart completely: the ack that ends after the kill
    returned is the recovery, not the dying process's last ack after the kill was issued."""
    node = "127.0.0.1:1"
    events = [
        Event(EventKind.FAULT_ISSUED, 10.0, 0.0),
        Event(EventKind.FAULT_RETURNED, 10.01, 0.0),
        Event(EventKind.FAULT_CLEARED, 10.06, 0.0),
    ]
    samples = [
        Sample("w", 1, Op.WRITE, 9.99, 9.995, 0.0, True, node=node),
        Sample(
            "w", 2, Op.WRITE, 10.001, 10.002, 0.0, True, node=node
        ),  # after the issue, before the kill landed
        Sample("w", 3, Op.WRITE, 10.003, 10.05, 0.0, True, node=node),  # retried onto the new process
        Sample("w", 4, Op.WRITE, 10.05, 10.07, 0.0, False, error="Timeout"),
    ]
    outage = restart_outage(samples, events, node)
    assert outage is not None
    assert outage.rto_s == pytest.approx(0.05) and outage.outage_s == pytest.approx(0.048)
    assert outage.failed_writes == 1 and outage.recovered_node == node
    assert [p.name for p in outage.phases] == ["kill", "restart"]
    assert restart_outage(samples, events[:1], node) is None


def test_factory_opens_a_local_redis_target_and_leaves_nothing() -> None:
    with open_target("redis", Profile(name="local")) as target:
        assert isinstance(target, LocalRedisTarget)
        assert target.describe().kind == "redis"
        staging = target._staging
        pids = staging.pids()
        workdir = staging.workdir
        assert len(pids) == 6
    assert not any(pid_alive(p) for p in pids.values())
    assert workdir is not None and not workdir.exists()
