"""One drill per target: the lease keeper and the holder's one-line refusal, with an in-memory lease."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from firedrill.errors import TargetError
from firedrill.targets.lease import Holder, LeaseBusy, LeaseKeeper, busy


@dataclass
class MemoryLease:
    name: str = "Patroni cluster 'x'"
    ttl_s: float = 0.2
    holder: Holder | None = None
    expires: float = 0.0
    renewals: int = 0
    fail_renewals: int = 0
    log: list[str] = field(default_factory=list)

    def acquire(self, holder: Holder) -> None:
        if (
            self.holder is not None
            and self.holder.run_id != holder.run_id
            and time.monotonic() < self.expires
        ):
            raise busy(self.name, self.holder)
        self.holder, self.expires = holder, time.monotonic() + self.ttl_s
        self.log.append("acquire")

    def renew(self, holder: Holder) -> bool:
        if self.fail_renewals:
            self.fail_renewals -= 1
            raise TargetError("store down")
        self.renewals += 1
        self.expires = time.monotonic() + self.ttl_s
        return True

    def release(self, holder: Holder) -> None:
        if self.holder == holder:
            self.holder = None
        self.log.append("release")


def test_a_second_drill_is_refused_in_one_line_naming_the_holder() -> None:
    lease = MemoryLease()
    alice = Holder("alice", "ops-1", 4242, "20261202T1-failover-aaa", "2026-12-02T15:00:00Z")
    with LeaseKeeper(lease, alice):
        with pytest.raises(LeaseBusy) as info:
            LeaseKeeper(lease, Holder.me("20261202T2-failover-bbb")).start()
        message = str(info.value)
        assert "\n" not in message
        assert message == (
            "Patroni cluster 'x' is being drilled by alice@ops-1 (pid 4242, run 20261202T1-failover-aaa, "
            "since 2026-12-02T15:00:00Z): one drill per target at a time"
        )
    assert lease.holder is None and lease.log == ["acquire", "release"]


def test_the_lease_is_renewed_while_the_drill_runs_and_survives_failed_renewals() -> None:
    lease = MemoryLease(ttl_s=0.2, fail_renewals=1)
    with LeaseKeeper(lease, Holder.me("run-1")):
        time.sleep(0.5)  # longer than the TTL: only renewals keep it
        assert time.monotonic() < lease.expires
        with pytest.raises(LeaseBusy):
            lease.acquire(Holder.me("run-2"))
    assert lease.renewals >= 2


def test_a_lease_whose_holder_died_expires() -> None:
    lease = MemoryLease(ttl_s=0.1)
    lease.acquire(
        Holder("bob", "gone", 1, "dead-run", "2026-12-02T15:00:00Z")
    )  # never renewed, never released
    time.sleep(0.15)
    LeaseKeeper(lease, Holder.me("run-3")).start()
    assert lease.holder is not None and lease.holder.run_id == "run-3"


def test_holders_round_trip_and_unreadable_ones_are_said_so() -> None:
    me = Holder.me("run-4")
    assert Holder.from_json(me.to_json()) == me
    assert Holder.from_json("not json") is None
    assert "holder unreadable" in str(busy("t", None))
