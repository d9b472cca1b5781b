"""The local Redis + Sentinel staging against real redis-server processes (no mocks).

The three failover scenarios share one staging on purpose and run in file order: each starts with
the steady-state check that a drill would make, so they also prove that `restore_topology()` leaves
the staging ready for the next scenario (Sentinel back-offs included).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator

import pytest
import redis

from firedrill.errors import HarnessError, StagingError, TargetError
from firedrill.staging.common import pid_alive
from firedrill.staging.redis_sentinel import (
    RedisNode,
    RedisSentinelStaging,
    RedisStagingConfig,
)

pytestmark = [
    pytest.mark.redis,
    pytest.mark.local,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]

SYSTEM_PORTS = {6379, 26379}
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_timings(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and TIMINGS:
        reporter.write_line("")
        for name, seconds in TIMINGS.items():
            reporter.write_line(f"redis staging timing: {name:<32} {seconds:6.2f} s")


@contextlib.contextmanager
def running(config: RedisStagingConfig | None = None) -> Iterator[RedisSentinelStaging]:
    staging = RedisSentinelStaging(config)
    try:
        staging.start()
        yield staging
    finally:
        staging.stop()


@pytest.fixture
def fresh() -> Iterator[RedisSentinelStaging]:
    with running() as staging:
        yield staging


@pytest.fixture(scope="module")
def shared() -> Iterator[RedisSentinelStaging]:
    with running() as staging:
        yield staging


@pytest.fixture
def scenario(shared: RedisSentinelStaging) -> Iterator[RedisSentinelStaging]:
    yield shared
    # A failed scenario must not take the next one down with it.
    with contextlib.suppress(HarnessError):
        shared.restore_topology(timeout_s=30)


def wait_new_master(
    staging: RedisSentinelStaging, old: RedisNode, start: float, timeout_s: float = 15.0
) -> tuple[RedisNode, float]:
    """Poll the Sentinels until they name another master and it accepts a write."""
    deadline = start + timeout_s
    while time.monotonic() < deadline:
        try:
            new = staging.current_master()
            if new != old and staging.client(new).set("firedrill:probe", "1"):
                return new, time.monotonic() - start
        except (HarnessError, redis.RedisError):
            pass
        time.sleep(0.05)
    pytest.fail(f"no new master within {timeout_s} s after the fault on {old.name}")


def role(node: RedisNode) -> str:
    """Read live each time (a plain `node.role` comparison gets narrowed by mypy)."""
    return node.role


def all_pids_dead(pids: dict[str, int]) -> bool:
    return not any(pid_alive(pid) for pid in pids.values())


def test_start_steady_stop_leaves_nothing() -> None:
    staging = RedisSentinelStaging()
    t0 = time.monotonic()
    try:
        staging.start()
        TIMINGS["start"] = time.monotonic() - t0
        report = staging.wait_steady(timeout_s=20)
        TIMINGS["start to steady"] = time.monotonic() - t0

        assert [n.name for n in staging.nodes] == ["redis-a", "redis-b", "redis-c"]
        assert report.master == "redis-a"
        assert staging.current_master().name == "redis-a"
        assert {r.name for r in report.replicas} == {"redis-b", "redis-c"}
        assert all(r.link_status == "up" for r in report.replicas)
        assert len(report.sentinels) == 3 and report.checks
        assert [n.role for n in staging.nodes] == ["master", "replica", "replica"]

        ports = staging.ports()
        assert len(ports) == 6 and len(set(ports)) == 6
        assert not SYSTEM_PORTS & set(ports)
        assert not SYSTEM_PORTS & {port for _, port in staging.sentinel_addresses()}
        assert all(host == "127.0.0.1" for host, _ in staging.sentinel_addresses())

        versions = staging.versions()
        assert set(versions) == {"redis-a", "redis-b", "redis-c", "sentinel-1", "sentinel-2", "sentinel-3"}
        assert all(v.split(".")[0].isdigit() for v in versions.values())

        pids = staging.pids()
        assert len(pids) == 6 and all(pid_alive(p) for p in pids.values())
        workdir = staging.workdir
        assert workdir is not None and workdir.is_dir()
        assert workdir.name.startswith("firedrill-redis-")
    finally:
        t1 = time.monotonic()
        staging.stop()
        TIMINGS["stop"] = time.monotonic() - t1
    assert all_pids_dead(pids)
    assert not workdir.exists()
    staging.stop()  # idempotent
    assert staging.nodes[0].pid is None


def test_missing_binary_names_what_was_searched() -> None:
    with pytest.raises(StagingError, match="/nonexistent/redis-server"):
        RedisSentinelStaging(RedisStagingConfig(redis_server="/nonexistent/redis-server")).start()
    with pytest.raises(StagingError, match="PATH"):
        RedisSentinelStaging(RedisStagingConfig(redis_server="no-such-redis-server")).start()


def test_kill_master_promotes_a_replica(scenario: RedisSentinelStaging) -> None:
    staging = scenario
    staging.wait_steady(timeout_s=20)
    old = staging.current_master()
    client = staging.client(old)
    client.set("before-kill", "1")
    assert client.wait(2, 2000) == 2

    t0 = time.monotonic()
    staging.kill(old)
    assert old.pid is None and role(old) == "unreachable"
    new, took = wait_new_master(staging, old, t0)
    TIMINGS["kill -9 -> writable new master"] = took
    assert new != old
    assert staging.client(new).get("before-kill") == "1"

    with pytest.raises(StagingError, match="not running"):
        staging.kill(old)

    t1 = time.monotonic()
    report = staging.restore_topology(timeout_s=45)
    TIMINGS["restore_topology after kill"] = time.monotonic() - t1
    assert report.master == new.name
    assert old.name in {r.name for r in report.replicas}
    assert role(old) == "replica" and old.pid is not None


def test_sentinel_failover_switchover(scenario: RedisSentinelStaging) -> None:
    staging = scenario
    staging.wait_steady(timeout_s=20)
    old = staging.current_master()

    t0 = time.monotonic()
    assert staging.sentinel_failover() == old
    new, took = wait_new_master(staging, old, t0)
    TIMINGS["SENTINEL FAILOVER -> new master"] = took
    assert new != old

    t1 = time.monotonic()
    report = staging.restore_topology(timeout_s=45)
    TIMINGS["restore_topology after switch"] = time.monotonic() - t1
    assert report.master == new.name
    assert role(old) == "replica"


def test_freeze_master_fails_over_then_thaw(scenario: RedisSentinelStaging) -> None:
    staging = scenario
    staging.wait_steady(timeout_s=20)
    old = staging.current_master()

    t0 = time.monotonic()
    staging.freeze(old)
    assert staging.is_frozen(old) and role(old) == "unreachable"
    new, took = wait_new_master(staging, old, t0)
    TIMINGS["SIGSTOP master -> new master"] = took

    staging.thaw(old)
    # The woken old master does not know yet: it is still a master (split brain, ~10 s).
    assert role(old) == "master"

    t1 = time.monotonic()
    report = staging.restore_topology(timeout_s=45)
    TIMINGS["restore_topology after freeze"] = time.monotonic() - t1
    assert report.master == new.name
    assert role(old) == "replica"
    assert {r.name for r in report.replicas} == {n.name for n in staging.nodes} - {new.name}


def test_aof_always_survives_kill_and_restart() -> None:
    # down-after 5 s: the in-place restart takes well under that, so no failover interferes.
    config = RedisStagingConfig(appendonly=True, appendfsync="always", down_after_ms=5000)
    with running(config) as staging:
        staging.wait_steady(timeout_s=20)
        master = staging.current_master()
        client = staging.client(master)
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        n = 300
        for i in range(n):
            client.set(f"aof:{i}", i)

        staging.kill(master)
        with pytest.raises(StagingError, match="as_replica=False"):
            staging.restart(master)  # the Sentinels still name it master
        t0 = time.monotonic()
        staging.restart(master, as_replica=False)
        TIMINGS["AOF master restart (300 keys)"] = time.monotonic() - t0

        assert role(master) == "master"
        assert staging.client(master).dbsize() == n
        report = staging.wait_steady(timeout_s=30)
        assert report.master == master.name
        for node in staging.nodes:
            assert staging.client(node).dbsize() == n


def test_stop_after_crash_and_freeze_leaves_nothing(fresh: RedisSentinelStaging) -> None:
    staging = fresh
    staging.wait_steady(timeout_s=20)
    master = staging.current_master()
    replicas = [n for n in staging.nodes if n != master]
    pids = staging.pids()

    for replica in replicas:
        staging.kill(replica)

    def replicas_down_everywhere() -> bool:
        for _, port in staging.sentinel_addresses():
            with redis.Redis(port=port, socket_timeout=0.5, decode_responses=True, protocol=2) as s:
                seen = s.execute_command("SENTINEL", "REPLICAS", staging.master_name)
                flags = [dict(zip(e[::2], e[1::2], strict=True))["flags"] for e in seen]
                if len(flags) != 2 or not all("s_down" in f for f in flags):
                    return False
        return True

    deadline = time.monotonic() + 10
    while not replicas_down_everywhere():
        assert time.monotonic() < deadline, "Sentinels never flagged the killed replicas"
        time.sleep(0.1)
    with pytest.raises(TargetError) as refused:
        staging.sentinel_failover()
    assert refused.value.code == "NOGOODSLAVE"
    assert "sentinel-" in str(refused.value)

    staging.freeze(master)
    workdir = staging.workdir
    assert workdir is not None
    t0 = time.monotonic()
    staging.stop()
    TIMINGS["stop with frozen master"] = time.monotonic() - t0
    assert all_pids_dead(pids)
    assert not workdir.exists()
