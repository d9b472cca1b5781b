"""One drill per target at a time, across processes and hosts: a lease held in the target itself.

A drill takes the target's lease before any fault and gives it back when it ends. A second drill
against the same target is refused in one line naming the holder (user@host, pid, run id, since).
A lease carries a TTL and is renewed while the drill runs, so one whose holder died (SIGKILL, a lost
host) expires by itself.

Where the lease lives is the target's business (`LeasedTarget.drill_lease()`):

- an existing Patroni cluster: a row in `firedrill_lease` in its own database (`PgLockRow`), written
  on the primary, so every host drilling it sees the same row, and it survives the failover it
  drills (synchronous replication) or, at worst, is taken again on the new primary;
- an existing Redis Sentinel deployment: a key with a PX TTL on the master (`RedisLeaseKey`);
- an AWS resource (RDS instance or Aurora cluster, ElastiCache replication group): a `firedrill:lease`
  tag on it with the holder and an expiry (`firedrill.targets.aws_lease.TagLease`);
- local stagings need none: each run starts its own.

A renewal that fails (the store is down during the drill's own fault) is retried at the next
period; the TTL is chosen to outlast such outages, and the lease is never renewed for a holder that
is not its owner.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import socket
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from firedrill.errors import HarnessError
from firedrill.targets.base import Change

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 120.0


class LeaseBusy(HarnessError):
    """Another drill holds the target's lease."""


@dataclass(frozen=True, slots=True)
class Holder:
    user: str
    host: str
    pid: int
    run_id: str
    since: str  # UTC, ISO 8601

    @classmethod
    def me(cls, run_id: str) -> Holder:
        return cls(
            user=getpass.getuser(),
            host=socket.gethostname(),
            pid=os.getpid(),
            run_id=run_id,
            since=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Holder | None:
        try:
            raw = json.loads(text)
            return cls(
                str(raw["user"]), str(raw["host"]), int(raw["pid"]), str(raw["run_id"]), str(raw["since"])
            )
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"{self.user}@{self.host} (pid {self.pid}, run {self.run_id}, since {self.since})"


def busy(target: str, holder: Holder | None) -> LeaseBusy:
    who = holder.describe() if holder is not None else "another drill (holder unreadable)"
    return LeaseBusy(f"{target} is being drilled by {who}: one drill per target at a time")


class DrillLease(Protocol):
    """A lease on one target. `acquire` raises LeaseBusy naming the holder, and may return a note for
    the evidence (e.g. whose expired lease it took over); `renew` extends the TTL of our own lease
    (False when it could not, e.g. the store is down); `release` gives it back."""

    name: str  # what is leased, for messages: "Patroni cluster 'orders-staging'"
    ttl_s: float

    def acquire(self, holder: Holder) -> str | None: ...

    def renew(self, holder: Holder) -> bool: ...

    def release(self, holder: Holder) -> None: ...


@runtime_checkable
class PlannedLease(Protocol):
    """A lease whose store is changed through calls `firedrill plan` lists (an AWS tag)."""

    def plan_changes(self) -> tuple[list[Change], list[Change]]:
        """What taking and renewing the lease changes (before the drill), and giving it back (after)."""
        ...


@runtime_checkable
class LeasedTarget(Protocol):
    def drill_lease(self) -> DrillLease | None:
        """The target's lease, or None where none is needed (a staging of this run's own)."""
        ...


class LeaseKeeper:
    """Holds a lease for the length of a drill: acquires it, renews it every ttl/4 on a thread,
    releases it (never raises on the way out)."""

    def __init__(self, lease: DrillLease, holder: Holder) -> None:
        self.lease = lease
        self.holder = holder
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.note: str | None = None  # what acquiring said for the evidence (an expired lease taken over)

    def __enter__(self) -> LeaseKeeper:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.note = self.lease.acquire(self.holder)
        self._thread = threading.Thread(target=self._renew_loop, name="drill-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        period = max(0.05, self.lease.ttl_s / 4)
        while not self._stop.wait(period):
            try:
                ok = self.lease.renew(self.holder)
            except HarnessError as exc:
                ok = False
                log.warning("lease renewal of %s failed: %s", self.lease.name, exc)
            if not ok:
                log.warning("lease of %s not renewed this period; retrying", self.lease.name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with contextlib.suppress(HarnessError):
            self.lease.release(self.holder)
