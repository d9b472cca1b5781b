"""Steps every drill shares: the canary's rate and the objective Then-steps (RTO, RPO, no loss).

The Then-steps only assert on the verdicts the drill recorded; the objectives themselves are read
from the scenario's Then-step texts before it runs (firedrill.steps.objectives).
"""

from __future__ import annotations

from dataclasses import replace

from pytest_bdd import given, parsers, then

from firedrill.steps.holder import DrillHolder
from firedrill.steps.objectives import NO_LOSS, RPO, RTO


@given(parsers.parse("canary writes at {rate:g} per second"))
def canary_rate(holder: DrillHolder, rate: float) -> None:
    """Sets the canary probe's write rate for this scenario (default: the profile's)."""
    assert holder.drill is not None
    run = holder.drill.run
    run.probe_config = replace(run.probe_config, rate_hz=rate)


@then(parsers.re(RTO.pattern))
def writes_resume(holder: DrillHolder) -> None:
    """RTO objective: the first acknowledged write after the fault comes within this time."""
    holder.assert_met("rto")


@then(parsers.re(RPO.pattern))
def bounded_loss(holder: DrillHolder) -> None:
    """RPO objective: the acknowledged writes lost span at most this window."""
    holder.assert_met("rpo")


@then(parsers.re(NO_LOSS.pattern))
def no_loss(holder: DrillHolder) -> None:
    """No acknowledged write is missing from the recovered store (every sequence number read back)."""
    holder.assert_met("lost_writes")
