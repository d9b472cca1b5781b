"""Steps of the AWS scenarios: faults issued through the AWS control plane, one call into drills/ each.

Which database answers (a Multi-AZ instance or an Aurora cluster) is the profile's business, not the
scenario's: the `postgres_target` fixture opens whatever `[profiles.<env>.aws.rds]` names.
"""

from __future__ import annotations

from pytest_bdd import when

from firedrill.steps.holder import DrillHolder
from firedrill.targets.base import FaultKind, FaultSpec


@when("the primary is rebooted with failover")
def reboot_with_failover(holder: DrillHolder) -> None:
    """RDS reboot with ForceFailover (Multi-AZ instance) or an Aurora cluster failover."""
    holder.current_failover().inject(FaultSpec(FaultKind.REBOOT_FAILOVER))


@when("the platform promotes the standby")
def platform_promotes(holder: DrillHolder) -> None:
    """Waits for the platform's own promotion and the first acknowledged write after it."""
    holder.current_failover().promote()
