"""Steps of the cache drills (Redis + Sentinel): one call into drills/ each.

The objective Then-steps ("writes succeed again within ...", "no acknowledged write is lost", ...)
and "canary writes at N per second" are the generic ones of failover_steps.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from pytest_bdd import given, parsers, then, when

from firedrill.config import Profile
from firedrill.drills.cache_persistence import CachePersistenceDrill, survivors
from firedrill.steps.holder import DrillHolder
from firedrill.targets.base import FailoverTarget, FaultKind, FaultSpec
from firedrill.targets.factory import open_target
from firedrill.targets.local_redis import LocalRedisTarget, aof_config, open_local_redis


@pytest.fixture(scope="module")
def redis_target(profile: Profile) -> Iterator[FailoverTarget]:
    """One staging for the failover scenarios of a module; each scenario restores its topology."""
    with open_target("redis", profile) as target:
        yield target


@pytest.fixture
def redis_aof_staging() -> Iterator[Callable[[str], LocalRedisTarget]]:
    """Opens a staging with AOF on and the given fsync policy, for one scenario; always torn down.
    The persistence drill does no I/O once its When-step is done, so tearing this down before
    the holder writes the evidence is safe."""
    with contextlib.ExitStack() as stack:
        yield lambda policy: stack.enter_context(open_local_redis(aof_config(policy)))


@given("a Redis master with two replicas watched by three Sentinels")
def redis_drill(holder: DrillHolder, redis_target: FailoverTarget) -> None:
    """Opens the profile's Redis (local staging: a master, 2 replicas, 3 Sentinels; AWS: ElastiCache)."""
    holder.failover("cache-failover", redis_target)


@given(parsers.parse("a Redis master with AOF persistence and appendfsync {policy}"))
def aof_drill(holder: DrillHolder, redis_aof_staging: Callable[[str], LocalRedisTarget], policy: str) -> None:
    """A Redis master with AOF on and the given appendfsync policy (always or everysec), for one scenario."""
    run = holder.probed_run("cache-persistence")
    # DrillHolder only needs `.run` and `.conclude()`, which the persistence drill has too.
    holder.drill = CachePersistenceDrill(redis_aof_staging(policy), run, policy)


@when("the master is killed")
def kill_master(holder: DrillHolder) -> None:
    """SIGKILL of the Redis master."""
    holder.current_failover().inject(FaultSpec(FaultKind.KILL))


@when("Sentinel is asked for a planned failover")
def switchover(holder: DrillHolder) -> None:
    """A planned failover: SENTINEL FAILOVER (AWS: ElastiCache test_failover)."""
    holder.current_failover().inject(FaultSpec(FaultKind.SWITCHOVER))


@when(parsers.parse("the master is stalled for {seconds:g} seconds and then resumed"))
def stall_master(holder: DrillHolder, seconds: float) -> None:
    """SIGSTOP of the master for N seconds (past down-after-milliseconds), then SIGCONT."""
    holder.current_failover().inject(FaultSpec(FaultKind.FREEZE, duration_s=seconds))


@when("Sentinel promotes a replica")
def sentinel_promotes(holder: DrillHolder) -> None:
    """Waits for Sentinel to promote a replica and for the first acknowledged write on it."""
    holder.current_failover().promote()


@when(parsers.parse("the master is killed after {count:d} acknowledged writes and restarted"))
def crash_and_restart(holder: DrillHolder, count: int) -> None:
    """After N acknowledged writes, SIGKILL the master and restart it from its AOF."""
    _persistence(holder).crash_and_restart(count)


@then("the restarted master reports how many acknowledged writes survived")
def survivors_reported(holder: DrillHolder) -> None:
    """The evidence says how many acknowledged writes the restarted master still holds."""
    record = holder.conclude()
    assert record is not None and survivors(record) is not None, (
        f"no survivor count in the evidence: {record.error if record else 'no drill ran'}"
    )


def _persistence(holder: DrillHolder) -> CachePersistenceDrill:
    drill = holder.drill
    if not isinstance(drill, CachePersistenceDrill):
        pytest.fail("no AOF persistence drill was set up by a Given step")
    return drill
