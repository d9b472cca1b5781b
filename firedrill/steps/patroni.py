"""Steps of failover drills on a Patroni-managed cluster: node-level faults, the DCS losing its
quorum, a planned switchover, and Then-steps that hold Patroni to what it promises (it promotes on
its own, never without a quorum, and the old primary comes back as a replica)."""

from __future__ import annotations

import time

import pytest
from pytest_bdd import given, parsers, then, when

from firedrill.drills.failover import FailoverDrill
from firedrill.errors import HarnessError
from firedrill.measure_ha import check_no_promotion
from firedrill.steps.holder import DrillHolder
from firedrill.targets.base import FailoverTarget, FaultKind, FaultSpec
from firedrill.targets.ha import WatchesHaManager
from firedrill.timeline import EventKind

REJOIN_TIMEOUT_S = 120.0


@given(
    parsers.parse(
        "a PostgreSQL cluster managed by Patroni with {nodes:d} nodes and etcd in the drill environment"
    )
)
def patroni_cluster(holder: DrillHolder, postgres_target: FailoverTarget, nodes: int) -> None:
    """Opens the profile's Patroni cluster (local-ha: 3 etcd, N Patroni nodes, HAProxy); checks its size."""
    drill = holder.failover("failover", postgres_target)
    if not isinstance(drill.target, WatchesHaManager):
        pytest.fail(
            "the drill environment is not a Patroni-managed cluster (use a local-ha or patroni profile)"
        )
    found = len(drill.target.describe().nodes)
    if found != nodes:
        pytest.fail(f"the scenario wants {nodes} Patroni nodes, the environment has {found}")


@when("the primary node is killed")
def kill_primary_node(holder: DrillHolder) -> None:
    """SIGKILL of Patroni and PostgreSQL on the primary's node at once: a node loss, not a crash."""
    holder.current_failover().inject(FaultSpec(FaultKind.KILL))


@when(parsers.parse("the primary node is frozen for {seconds:g} seconds"))
def freeze_primary_node(holder: DrillHolder, seconds: float) -> None:
    """SIGSTOP of Patroni and PostgreSQL on the primary's node for N seconds, then SIGCONT."""
    holder.current_failover().inject(FaultSpec(FaultKind.FREEZE, duration_s=seconds))


@when(parsers.parse("etcd loses its quorum for {seconds:g} seconds"))
def etcd_loses_quorum(holder: DrillHolder, seconds: float) -> None:
    """Stops a majority of the etcd members (2 of 3) for N seconds, then starts them again."""
    drill = holder.current_failover()
    fault = FaultSpec(FaultKind.DCS_QUORUM_LOSS, duration_s=seconds)
    drill.inject(fault)
    time.sleep(seconds)
    drill.run.mark(EventKind.FAULT_CLEARED, drill.target.clear(fault))


@when("a switchover to a replica is requested through Patroni's REST API")
def switchover(holder: DrillHolder) -> None:
    """POST /switchover to the leader, naming the synchronous standby as the candidate."""
    holder.current_failover().inject(FaultSpec(FaultKind.SWITCHOVER))


def _record(drill: FailoverDrill, name: str, passed: bool, detail: str) -> None:
    """A check goes into the evidence while it is still open; afterwards the assertion alone says it."""
    if drill.run.evidence is None:
        drill.run.check(name, passed, detail)
    assert passed, f"{name}: {detail}"


def _new_primary(drill: FailoverDrill, wait_s: float = 2.0) -> str | None:
    """The first NEW_PRIMARY the watcher recorded after the fault (waiting a moment for it)."""
    deadline = time.monotonic() + wait_s
    while True:
        _, events = drill.run.timeline.snapshot()
        fault = next((e.mono for e in events if e.kind is EventKind.FAULT_ISSUED), None)
        seen = [
            e for e in events if e.kind is EventKind.NEW_PRIMARY and fault is not None and e.mono >= fault
        ]
        if seen or time.monotonic() >= deadline:
            return seen[0].detail if seen else None
        time.sleep(0.05)


def _await_promotion(drill: FailoverDrill, what: str) -> None:
    if drill.run.evidence is None:
        try:
            drill.promote()  # not a promotion: the target only waits for Patroni's
        except HarnessError as exc:
            _record(drill, what, False, str(exc).splitlines()[0])
    promoted = _new_primary(drill)
    _record(
        drill, what, promoted is not None, f"new primary {promoted}" if promoted else "no new primary seen"
    )


@then("Patroni promotes a replica on its own")
def patroni_promotes(holder: DrillHolder) -> None:
    """Waits for Patroni to promote a replica (firedrill promotes nothing); checks a new primary was seen."""
    _await_promotion(holder.current_failover(), "Patroni promoted a replica on its own")


@then("Patroni hands the primary role to a replica")
def patroni_hands_over(holder: DrillHolder) -> None:
    """Waits for the switchover to finish and checks another node now runs as primary."""
    _await_promotion(holder.current_failover(), "the switchover made a replica the primary")


@then("the old primary rejoins as a replica")
def old_primary_rejoins(holder: DrillHolder) -> None:
    """Waits until the node that was primary before the fault streams again as a replica (no split brain)."""
    drill = holder.current_failover()
    target = drill.target
    if not isinstance(target, WatchesHaManager):
        pytest.fail("this target has no HA manager to rejoin")
    try:
        detail, ok = target.wait_rejoined(timeout_s=REJOIN_TIMEOUT_S), True
    except HarnessError as exc:
        detail, ok = str(exc).splitlines()[0], False
    _record(drill, "the old primary rejoined as a replica", ok, detail)


@then("no node is promoted while etcd has no quorum")
def no_promotion_without_quorum(holder: DrillHolder) -> None:
    """Checks no node became primary while etcd had no quorum: same leader and timeline, one primary."""
    drill = holder.current_failover()
    _, events = drill.run.timeline.snapshot()
    start = next((e.mono for e in events if e.kind is EventKind.FAULT_ISSUED), None)
    end = next((e.mono for e in events if e.kind is EventKind.FAULT_CLEARED), None)
    if start is None or end is None:
        pytest.fail("etcd's quorum was not taken away and given back in this scenario")
    ok, detail = check_no_promotion(events, start, end)
    _record(drill, "no node promoted while etcd had no quorum", ok, detail)
