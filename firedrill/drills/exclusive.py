"""One drill per target at a time: a drill takes its target's lease before anything else and gives
it back once its evidence is written. Driven by the target's capability (`LeasedTarget`), never by
environment kind; targets that need none (a staging of this run's own) return None."""

from __future__ import annotations

from firedrill.drills.base import DrillRun
from firedrill.targets.lease import Holder, LeasedTarget, LeaseKeeper
from firedrill.timeline import EventKind


def hold_lease(target: object, run: DrillRun) -> LeaseKeeper | None:
    """Take the target's lease (LeaseBusy, one line naming the holder, if another drill has it).
    Any drill's target: a failover target, a restore target's source."""
    if not isinstance(target, LeasedTarget):
        return None
    lease = target.drill_lease()
    if lease is None:
        return None
    keeper = LeaseKeeper(lease, Holder.me(run.run_id))
    keeper.start()
    taken = f"drill lease of {lease.name} taken (ttl {lease.ttl_s:g} s, renewed while drilling)"
    run.mark(EventKind.NOTE, f"{taken}; {keeper.note}" if keeper.note else taken)
    return keeper


def release_lease(keeper: LeaseKeeper | None) -> None:
    if keeper is not None:
        keeper.stop()
