"""Steps of the AWS scenarios: faults issued through the AWS control plane, one call into drills/ each.

Which database answers (a Multi-AZ instance or an Aurora cluster) is the profile's business, not the
scenario's: the `postgres_target` fixture opens whatever `[profiles.<env>.aws.rds]` names.
"""

from __future__ import annotations

from pytest_bdd import when

from features.steps.common import DrillHolder
from features.steps.failover_steps import _drill
from harness.targets.base import FaultKind, FaultSpec


@when("the primary is rebooted with failover")
def reboot_with_failover(holder: DrillHolder) -> None:
    _drill(holder).inject(FaultSpec(FaultKind.REBOOT_FAILOVER))


@when("the platform promotes the standby")
def platform_promotes(holder: DrillHolder) -> None:
    _drill(holder).promote()
