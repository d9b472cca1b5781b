"""Canary probes: sequence-numbered writes at a steady rate, each one timed on the monotonic clock.

A probe must never hide an outage behind a long client wait. Every operation therefore has a hard
client-side deadline (`op_timeout_s`) enforced here, independent of the driver: the operation runs
on a worker thread; if it does not answer in time the sample is recorded as a failure at the deadline,
the worker and its connection are abandoned (it closes them when the call finally returns) and a
fresh worker takes over. This also covers connects to a frozen server, which libpq will not time out
in under 2 s.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from firedrill.errors import ConfigError
from firedrill.timeline import Op, Sample, Timeline


class ProbeSession(Protocol):
    """One client connection's worth of canary work. Implementations live in the adapters."""

    def write(self, seq: int) -> str:
        """Write canary record `seq`; return the node that acknowledged it. Raise on failure."""
        ...

    def close(self) -> None: ...


SessionFactory = Callable[[], ProbeSession]


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    rate_hz: float = 50.0
    op_timeout_s: float = 0.5
    connect_timeout_s: float = 0.5
    outage_speedup: float = 4.0  # while operations fail, probe this many times faster

    def __post_init__(self) -> None:
        if not 0.1 <= self.rate_hz <= 1000:
            raise ConfigError(f"probe rate {self.rate_hz} Hz is outside 0.1..1000")
        if not 1 <= self.outage_speedup <= 20:
            raise ConfigError(f"probe outage speed-up {self.outage_speedup} is outside 1..20")
        if not 0.01 <= self.op_timeout_s <= 60:
            raise ConfigError(f"probe op timeout {self.op_timeout_s} s is outside 0.01..60")


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    node: str | None
    error: str | None


LATE_ACK = "LateAck"

# (seq, start, wall, end, node) of an operation the server acknowledged after its deadline
LateAck = Callable[[int, float, float, float, str | None], None]


class _Worker:
    """A thread owning one session; it runs one operation at a time."""

    def __init__(self, factory: SessionFactory, on_late: LateAck | None = None) -> None:
        self._factory = factory
        self._on_late = on_late
        self._session: ProbeSession | None = None
        self.inbox: queue.Queue[tuple[int, float, float] | None] = queue.Queue()
        self.outbox: queue.Queue[_Outcome] = queue.Queue()
        self.abandoned = threading.Event()
        self._thread = threading.Thread(target=self._run, name="firedrill-probe-op", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            op = self.inbox.get()
            if op is None or self.abandoned.is_set():
                break
            seq, start, wall = op
            try:
                if self._session is None:
                    self._session = self._factory()
                node = self._session.write(seq)
                outcome = _Outcome(True, node, None)
            except Exception as exc:  # any failure of the service under test is data, not a crash
                outcome = _Outcome(False, None, getattr(exc, "probe_error", type(exc).__name__))
                self._drop_session()
            if self.abandoned.is_set():
                # Given up at the deadline, yet the server did acknowledge it: that moment is real
                # evidence of when service came back (the deadline failure stays recorded too).
                if outcome.ok and self._on_late is not None:
                    self._on_late(seq, start, wall, time.monotonic(), outcome.node)
                break
            self.outbox.put(outcome)
        self._drop_session()

    def _drop_session(self) -> None:
        if self._session is not None:
            with contextlib.suppress(Exception):
                self._session.close()
            self._session = None

    def abandon(self) -> None:
        self.abandoned.set()
        self.inbox.put(None)

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)


class CanaryWriter:
    """Writes seq 1, 2, 3, ... at `rate_hz` until stopped, recording every attempt in the timeline."""

    def __init__(self, name: str, factory: SessionFactory, timeline: Timeline, config: ProbeConfig) -> None:
        self.name = name
        self._factory = factory
        self._timeline = timeline
        self._config = config
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"firedrill-probe-{name}", daemon=True)
        self.last_seq = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _late_ack(self, seq: int, start: float, wall: float, end: float, node: str | None) -> None:
        if not self._stop.is_set():  # after stop() the timeline belongs to the measurement
            self._timeline.add_sample(
                Sample(self.name, seq, Op.WRITE, start, end, wall, True, LATE_ACK, node)
            )

    def _loop(self) -> None:
        period = 1.0 / self._config.rate_hz
        worker = _Worker(self._factory, self._late_ack)
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                self.last_seq += 1
                seq = self.last_seq
                wall = time.time()
                start = time.monotonic()
                worker.inbox.put((seq, start, wall))
                try:
                    outcome = worker.outbox.get(timeout=self._config.op_timeout_s)
                except queue.Empty:
                    outcome = _Outcome(False, None, "ClientTimeout")
                    worker.abandon()
                    worker = _Worker(self._factory, self._late_ack)
                end = time.monotonic()
                self._timeline.add_sample(
                    Sample(
                        self.name, seq, Op.WRITE, start, end, wall, outcome.ok, outcome.error, outcome.node
                    )
                )
                now = time.monotonic()
                if outcome.ok:
                    next_at += period
                    if next_at < now - period:
                        next_at = now  # fell behind during an outage: resume the rate, do not burst
                else:
                    # During an outage probe faster (bounded), so its end is seen within a fraction
                    # of a period instead of up to a whole one.
                    next_at = min(next_at + period, start + period / self._config.outage_speedup)
                self._stop.wait(max(0.0, next_at - now))
        finally:
            worker.abandon()
            worker.join(self._config.op_timeout_s)
