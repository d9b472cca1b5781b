"""The background load generator: N writer threads that share a requested rate of operations per
second, each with its own store session, every write carrying a global sequence number.

- Rate: writer k of N issues an operation every N/rate seconds on its own schedule (offset by k/rate,
  so the writers interleave). A writer that falls behind (the store is slow, the GIL is busy) does
  not burst to catch up: it resumes the rate from now, so the achieved rate shows the shortfall
  instead of hiding it.
- Reads: a share of the operations reads back a write this writer had acknowledged (a real mix of
  reads and writes, served by the same primary); a read never carries a new sequence number.
- Failures: an operation that raises is recorded as failed with its error class (`probe_error` of
  the adapter's exception, else the exception's type), the session is dropped, and the writer waits
  `backoff_s` before its next attempt, as an application's pool would, instead of hammering a node
  that is being promoted with thousands of connects a second.
- Every operation is timed on the monotonic clock (start, end) into the writer's own compact columns
  (no lock); `stop()` joins the threads, closes the sessions and hands over one `LoadSamples`.
- Stopping: `stop()` is idempotent and bounded (a writer stuck in a call is left behind as a daemon
  thread and its session closed when the call returns); every started generator is also stopped at
  interpreter exit. Nothing keeps running after a drill.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from firedrill.errors import ConfigError
from firedrill.load.accounting import LoadSamples, merge


class LoadSession(Protocol):
    """One writer's connection to the store. Implementations: `firedrill.load.pg`, `.redis`."""

    def write(self, seq: int, writer: int) -> None:
        """Write record `seq`; return once the store acknowledged it. Raise on failure."""
        ...

    def read(self, seq: int) -> None:
        """Read record `seq` back. Raise on failure."""
        ...

    def close(self) -> None: ...


LoadSessionFactory = Callable[[], LoadSession]


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What a scenario (or a profile's `[load]`) asks of the background load."""

    writers: int = 8
    rate_per_s: float = 2000.0
    read_share: float = 0.0  # 0.2: 20% of the operations are reads
    row_bytes: int = 64  # payload of each written row
    op_timeout_s: float = 2.0  # the store client's own timeout for one operation
    backoff_s: float = 0.05  # a writer's pause after a failed operation

    def __post_init__(self) -> None:
        if not 1 <= self.writers <= 64:
            raise ConfigError(f"background load: {self.writers} writers is outside 1..64")
        if not 1 <= self.rate_per_s <= 100_000:
            raise ConfigError(f"background load: {self.rate_per_s:g} writes per second is outside 1..100000")
        if not 0 <= self.read_share <= 0.95:
            raise ConfigError(f"background load: a read share of {self.read_share:.0%} is outside 0%..95%")
        if not 0 <= self.row_bytes <= 1_048_576:
            raise ConfigError(f"background load: {self.row_bytes}-byte rows are outside 0..1048576 bytes")
        if not 0.05 <= self.op_timeout_s <= 60:
            raise ConfigError(
                f"background load: an operation timeout of {self.op_timeout_s:g} s is outside 0.05..60"
            )
        if not 0 <= self.backoff_s <= 5:
            raise ConfigError(f"background load: a back-off of {self.backoff_s:g} s is outside 0..5")

    def describe(self) -> str:
        mix = f", {self.read_share:.0%} reads" if self.read_share else ""
        return f"{self.writers} writers at {self.rate_per_s:g} operations/s{mix}, {self.row_bytes}-byte rows"


def error_class(exc: BaseException) -> str:
    """The short class a failed operation is counted under."""
    return str(getattr(exc, "probe_error", "") or type(exc).__name__)


_LIVE: set[LoadGenerator] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for gen in live:
        with contextlib.suppress(Exception):
            gen.stop(timeout_s=1.0)


class LoadGenerator:
    """N writers at a shared rate until `stop()`; `samples()` afterwards."""

    def __init__(self, factory: LoadSessionFactory, spec: LoadSpec, *, seed: int | None = None) -> None:
        self._factory = factory
        self.spec = spec
        self._stop = threading.Event()
        self._seqs = itertools.count(1)  # next() on a count is atomic under the GIL: global, unique
        self._parts = [LoadSamples() for _ in range(spec.writers)]
        self._threads = [
            threading.Thread(target=self._writer, args=(k,), name=f"firedrill-load-{k}", daemon=True)
            for k in range(spec.writers)
        ]
        self._seed = seed
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self._stopped = False
        self._lock = threading.Lock()
        self._go = threading.Event()  # cleared: the writers pause before their next operation
        self._go.set()
        self._idle = [threading.Event() for _ in range(spec.writers)]

    @property
    def running(self) -> bool:
        return self.started_at is not None and not self._stopped

    def start(self) -> None:
        with self._lock:
            if self.started_at is not None:
                return
            self.started_at = time.monotonic()
            with _LIVE_LOCK:
                _LIVE.add(self)
            for t in self._threads:
                t.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop every writer and wait for them (at most `timeout_s`, default: twice the operation
        timeout); idempotent."""
        with self._lock:
            if self._stopped or self.started_at is None:
                self._stopped = True
                return
            self._stopped = True
            self._stop.set()
            self._go.set()
            self.stopped_at = time.monotonic()
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else 2 * self.spec.op_timeout_s + 1)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def pause(self, timeout_s: float = 5.0) -> bool:
        """Hold every writer before its next operation and wait until none has one in flight (a
        ground-truth check needs a moment where every acknowledged write is known). True when all
        writers are idle within `timeout_s`."""
        self._go.clear()
        deadline = time.monotonic() + timeout_s
        return all(e.wait(max(0.0, deadline - time.monotonic())) for e in self._idle)

    def resume(self) -> None:
        self._go.set()

    def samples(self) -> LoadSamples:
        """Every operation recorded so far, merged (call after `stop()` for the whole load)."""
        return merge(self._parts)

    def _writer(self, k: int) -> None:
        spec = self.spec
        part = self._parts[k]
        rng = random.Random(None if self._seed is None else self._seed * 1000 + k)
        period = spec.writers / spec.rate_per_s
        assert self.started_at is not None
        next_at = self.started_at + k / spec.rate_per_s
        session: LoadSession | None = None
        last_acked = 0
        try:
            while not self._stop.is_set():
                if not self._go.is_set():
                    self._idle[k].set()
                    self._go.wait()
                    self._idle[k].clear()
                    continue
                now = time.monotonic()
                if next_at > now and self._stop.wait(next_at - now):
                    break
                read = last_acked > 0 and spec.read_share > 0 and rng.random() < spec.read_share
                seq = last_acked if read else next(self._seqs)
                start = time.monotonic()
                try:
                    if session is None:
                        session = self._factory()
                    if read:
                        session.read(seq)
                    else:
                        session.write(seq, k)
                    ok = True
                except Exception as exc:  # the store failing is data, not a crash of the load
                    ok = False
                    part.errors[error_class(exc)] += 1
                    _close(session)
                    session = None
                end = time.monotonic()
                part.add(seq, start, end, ok=ok, read=read)
                if ok and not read:
                    last_acked = seq
                next_at += period
                if not ok:
                    next_at = max(next_at, end + spec.backoff_s)
                elif next_at < end - period:
                    next_at = end  # fell behind: resume the rate, do not burst
        finally:
            self._idle[k].set()
            _close(session)


def _close(session: LoadSession | None) -> None:
    if session is not None:
        with contextlib.suppress(Exception):
            session.close()
