"""Steps of the failover drill: one call into drills/ each."""

from __future__ import annotations

import time

import pytest
from pytest_bdd import given, parsers, when

from firedrill.steps.holder import DrillHolder
from firedrill.targets.base import FailoverTarget, FaultKind, FaultSpec, PreparesFaults
from firedrill.timeline import EventKind


@given("a PostgreSQL primary with a streaming standby in the drill environment")
def postgres_drill(holder: DrillHolder, postgres_target: FailoverTarget) -> None:
    """Opens the profile's PostgreSQL pair (local staging: primary + streaming standby; AWS: the RDS
    target)."""
    holder.failover("failover", postgres_target)


@when("the primary is killed")
def kill_primary(holder: DrillHolder) -> None:
    """SIGKILL of the primary's postmaster and every backend (AWS: not supported, use a reboot)."""
    holder.current_failover().inject(FaultSpec(FaultKind.KILL))


@when("the primary is stopped gracefully")
def stop_primary(holder: DrillHolder) -> None:
    """Graceful shutdown of the primary (pg_ctl stop -m fast)."""
    holder.current_failover().inject(FaultSpec(FaultKind.STOP))


@when(parsers.parse("the primary is frozen for {seconds:g} seconds"))
def freeze_primary(holder: DrillHolder, seconds: float) -> None:
    """SIGSTOP of the primary for N seconds, then SIGCONT: a hung node, not a dead one."""
    holder.current_failover().inject(FaultSpec(FaultKind.FREEZE, duration_s=seconds))


@when("the standby is promoted")
def promote_standby(holder: DrillHolder) -> None:
    """Promotes the standby (pg_promote) and waits for the first acknowledged write on it."""
    holder.current_failover().promote()


@when(parsers.parse("the network between the application and the primary is cut for {seconds:g} seconds"))
def cut_network(holder: DrillHolder, seconds: float) -> None:
    """Blackholes the probes' traffic to the primary at the fault proxy for N seconds, then heals it."""
    drill = holder.current_failover()
    fault = FaultSpec(FaultKind.NETWORK_CUT, duration_s=seconds)
    target = drill.target
    if not isinstance(target, PreparesFaults):
        pytest.fail("this target cannot route its probes through a fault proxy")
    target.prepare_fault(fault)  # before the probes start: they must go through the proxy
    drill.inject(fault)
    # The proxy ends the cut on its own clock; like the drill's thaw after a freeze, record when.
    time.sleep(seconds)
    drill.run.mark(EventKind.FAULT_CLEARED, drill.target.clear(fault))
