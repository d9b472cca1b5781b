"""Capabilities of targets whose failover an HA manager (Patroni) decides, not firedrill.

A drill asks `isinstance(target, WatchesHaManager)` and, if so, has the target record what the HA
manager does (leader key, roles, timelines) on the drill's own timeline while the drill runs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from firedrill.timeline import Timeline

# Keys of TargetDescription.settings that hold the HA manager's timers, in seconds.
TTL_KEY = "ttl"
LOOP_WAIT_KEY = "loop_wait"


@runtime_checkable
class WatchesHaManager(Protocol):
    def start_watch(self, timeline: Timeline) -> None:
        """Start recording HA events on `timeline` (returns once a pre-fault baseline is recorded)."""
        ...

    def stop_watch(self) -> None: ...

    def wait_rejoined(self, *, timeout_s: float) -> str:
        """Wait until the node that was primary before the fault streams again as a replica;
        return what was seen. Raises TargetError/DeadlineExceeded when it does not."""
        ...
