"""The probe's own mechanics, on a synthetic session (no server involved): deadlines and late acks."""

from __future__ import annotations

import threading
import time

from firedrill.probes import LATE_ACK, CanaryWriter, ProbeConfig
from firedrill.timeline import Timeline


class StallOnce:
    """Acknowledges every write at once, except seq 3, which it answers only after `stall_s`."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s

    def write(self, seq: int) -> str:
        if seq == 3:
            time.sleep(self.stall_s)
        return "node-a"

    def close(self) -> None:
        pass


def test_a_stalled_write_fails_at_the_deadline_and_its_late_ack_is_kept() -> None:
    timeline = Timeline()
    writer = CanaryWriter("w", lambda: StallOnce(0.3), timeline, ProbeConfig(rate_hz=50, op_timeout_s=0.1))
    writer.start()
    time.sleep(0.6)
    writer.stop()
    seq3 = sorted((s for s in timeline.samples if s.seq == 3), key=lambda s: s.end)
    assert [s.ok for s in seq3] == [False, True]
    timeout, late = seq3
    assert timeout.error == "ClientTimeout" and 0.09 <= timeout.end - timeout.start < 0.2
    assert late.error == LATE_ACK and late.start == timeout.start and late.end - late.start >= 0.3
    # the probe went on at its rate meanwhile, on a fresh connection
    assert any(s.ok and s.seq > 3 and s.end < late.end for s in timeline.samples)


def test_no_late_ack_after_stop() -> None:
    timeline = Timeline()
    release = threading.Event()

    class Hang:
        def write(self, seq: int) -> str:
            release.wait(2)
            return "node-a"

        def close(self) -> None:
            pass

    writer = CanaryWriter("w", Hang, timeline, ProbeConfig(rate_hz=50, op_timeout_s=0.05))
    writer.start()
    time.sleep(0.12)
    writer.stop()
    n = len(timeline.samples)
    release.set()
    time.sleep(0.1)
    assert len(timeline.samples) == n
    assert all(not s.ok for s in timeline.samples)
