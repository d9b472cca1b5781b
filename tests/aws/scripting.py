"""Playing an AWS failover in tests: Stubber answers the control plane, hooks move the local data plane.

moto leaves a forced failover a no-op, so the control-plane sequence (rebooting -> available with the
writer in the other zone, the events RDS writes) is scripted with botocore's Stubber, in the order the
adapter asks. What the platform would do to the servers happens at the matching call through
`on_call`: the fault when the failover API is called, the promotion when the scripted status says it
is done. Stubber answers at `before-call`; these hooks run at `before-parameter-build`, which every
call passes through first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.stub import ANY, Stubber


class CallHooks:
    """Run `action` when the client's `operation` is called for the `nth` time (1-based)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.fired: list[tuple[str, int, float]] = []  # (operation, nth, monotonic time)

    def on_call(self, operation: str, action: Callable[[], None], nth: int = 1) -> None:
        service = self._client.meta.service_model.service_id.hyphenize()
        calls = [0]

        def handler(**_: Any) -> None:
            calls[0] += 1
            if calls[0] == nth:
                self.fired.append((operation, nth, time.monotonic()))
                action()

        self._client.meta.events.register(
            f"before-parameter-build.{service}.{operation}",
            handler,
            unique_id=f"{operation}-{nth}-{id(handler)}",
        )

    def fired_at(self, operation: str) -> float:
        return next(t for op, _, t in self.fired if op == operation)


class RdsInstanceScript:
    """The calls a RdsFailoverTarget makes on a Multi-AZ instance, in order, answered by Stubber."""

    def __init__(self, stubber: Stubber, instance: Callable[..., dict[str, Any]], instance_id: str) -> None:
        self.stubber = stubber
        self._instance = instance
        self._id = instance_id

    def describe(self, status: str, az: str, standby: str | None) -> RdsInstanceScript:
        self.stubber.add_response(
            "describe_db_instances",
            {"DBInstances": [self._instance(status, az, standby, instance_id=self._id)]},
            {"DBInstanceIdentifier": self._id},
        )
        return self

    def reboot(self, az: str, standby: str) -> RdsInstanceScript:
        self.stubber.add_response(
            "reboot_db_instance",
            {"DBInstance": self._instance("rebooting", az, standby, instance_id=self._id)},
            {"DBInstanceIdentifier": self._id, "ForceFailover": True},
        )
        return self

    def events(self, *events: dict[str, Any]) -> RdsInstanceScript:
        self.stubber.add_response(
            "describe_events",
            {"Events": list(events)},
            {"SourceIdentifier": self._id, "SourceType": "db-instance", "StartTime": ANY},
        )
        return self

    def steady(self, az: str, standby: str | None, times: int) -> RdsInstanceScript:
        for _ in range(times):
            self.describe("available", az, standby)
        return self
