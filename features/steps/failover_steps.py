"""Steps of the failover drill: one call into drills/ each."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pytest_bdd import given, parsers, then, when

from features.objectives import NO_LOSS, RPO, RTO
from features.steps.common import DrillHolder
from harness.targets.base import FailoverTarget, FaultKind, FaultSpec


@given("a PostgreSQL primary with a streaming standby in the drill environment")
def postgres_drill(holder: DrillHolder, postgres_target: FailoverTarget) -> None:
    holder.failover("failover", postgres_target)


@given(parsers.parse("canary writes at {rate:g} per second"))
def canary_rate(holder: DrillHolder, rate: float) -> None:
    assert holder.drill is not None
    run = holder.drill.run
    run.probe_config = replace(run.probe_config, rate_hz=rate)


@when("the primary is killed")
def kill_primary(holder: DrillHolder) -> None:
    _drill(holder).inject(FaultSpec(FaultKind.KILL))


@when("the primary is stopped gracefully")
def stop_primary(holder: DrillHolder) -> None:
    _drill(holder).inject(FaultSpec(FaultKind.STOP))


@when(parsers.parse("the primary is frozen for {seconds:g} seconds"))
def freeze_primary(holder: DrillHolder, seconds: float) -> None:
    _drill(holder).inject(FaultSpec(FaultKind.FREEZE, duration_s=seconds))


@when("the standby is promoted")
def promote_standby(holder: DrillHolder) -> None:
    _drill(holder).promote()


@then(parsers.re(RTO.pattern))
def writes_resume(holder: DrillHolder) -> None:
    holder.assert_met("rto")


@then(parsers.re(RPO.pattern))
def bounded_loss(holder: DrillHolder) -> None:
    holder.assert_met("rpo")


@then(parsers.re(NO_LOSS.pattern))
def no_loss(holder: DrillHolder) -> None:
    holder.assert_met("lost_writes")


def _drill(holder: DrillHolder):  # type: ignore[no-untyped-def]
    if holder.drill is None:
        pytest.fail("no drill environment was set up by a Given step")
    return holder.drill
