"""What probes and drills record while a drill runs: samples and events on the monotonic clock.

Everything here is plain data plus a thread-safe recorder; `firedrill.measure` turns it into figures.
Monotonic times are seconds from `time.monotonic()`; wall times are Unix epoch seconds taken at the
same moment, kept only for humans (the report's clock) and for matching commit timestamps.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum


class Op(StrEnum):
    WRITE = "write"
    READ = "read"


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe operation. `ok` means acknowledged by the server (a write committed, a read answered)."""

    probe: str
    seq: int
    op: Op
    start: float
    end: float
    wall: float
    ok: bool
    error: str | None = None
    node: str | None = None


class EventKind(StrEnum):
    STEADY_STATE_OK = "steady_state_ok"
    PROBES_STARTED = "probes_started"
    FAULT_ISSUED = "fault_issued"
    FAULT_RETURNED = "fault_returned"
    FAULT_CLEARED = "fault_cleared"
    PROMOTION_STARTED = "promotion_started"
    PROMOTION_DONE = "promotion_done"
    RECOVERED = "recovered"
    PROBES_STOPPED = "probes_stopped"
    VERIFIED = "verified"
    TOPOLOGY_RESTORED = "topology_restored"
    DISASTER = "disaster"
    RESTORE_STARTED = "restore_started"
    RESTORE_PHASE = "restore_phase"
    RESTORE_DONE = "restore_done"
    NOTE = "note"
    ERROR = "error"
    # What an HA manager (Patroni) was seen doing, by a watcher polling its DCS and REST API.
    HA_ROLES = "ha_roles"  # the leader key holder and every node's role@timeline, on each change
    LEADER_LOST = "leader_lost"  # the leader key was seen gone (expired, or released)
    LEADER_ELECTED = "leader_elected"  # the leader key was seen held by a node (detail: its name)
    NEW_PRIMARY = "new_primary"  # a node other than the pre-fault primary reports running as primary


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    mono: float
    wall: float
    detail: str = ""


@dataclass
class Timeline:
    """Thread-safe sink for samples and events. Probes append from their threads."""

    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_sample(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)

    def mark(self, kind: EventKind, detail: str = "") -> Event:
        event = Event(kind=kind, mono=time.monotonic(), wall=time.time(), detail=detail)
        with self._lock:
            self.events.append(event)
        return event

    def snapshot(self) -> tuple[list[Sample], list[Event]]:
        with self._lock:
            return list(self.samples), list(self.events)

    def first(self, kind: EventKind) -> Event | None:
        with self._lock:
            return next((e for e in self.events if e.kind == kind), None)
