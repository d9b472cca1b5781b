"""Latency and packet loss between zones, in userspace: this kernel has no netem, and tbf limits a rate
without adding delay. A `ShapingProxy` forwards TCP from a listening address to a server and holds
each chunk of bytes back before passing it on:

* **delay**: every chunk, in each direction, is delivered `delay_s` after it was read (one way, so a
  request/response pays 2 x delay_s).
* **loss**: a userspace proxy cannot drop bytes from a TCP stream without corrupting it, so a lost
  segment is modelled by what TCP does about it: with probability `loss`, a chunk is delivered one
  retransmission timeout later (`RETRANSMIT_S`, Linux's minimum RTO, 200 ms), and everything behind
  it waits too (in-order delivery, head-of-line blocking).

Placed between zones: `ShapingProxy(upstream=(zone b address, port), namespace=<client zone's ns>)`
listens on 127.0.0.1 *inside the clients' zone* and connects to the server from there, so only the
traffic of clients sent to it crosses the shaped path. A shape applies to bytes read after it is set
(`set_shape`, timed on the monotonic clock like every fault) until `clear()`; `stop()` always ends it.
One thread accepts; each connection has one thread per direction.
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass

from firedrill.errors import ConfigError, StagingError
from firedrill.staging.common import track, untrack
from firedrill.staging.zones import enter_namespace

RETRANSMIT_S = 0.2  # TCP_RTO_MIN on Linux: the least a lost segment costs
_RECV = 65536


@dataclass(frozen=True, slots=True)
class Shape:
    delay_s: float = 0.0  # one way, each direction
    loss: float = 0.0  # probability that a chunk is "lost" once (delivered RETRANSMIT_S later)

    def __post_init__(self) -> None:
        if not 0 <= self.delay_s <= 30:
            raise ConfigError(f"delay {self.delay_s} s is outside 0..30 s")
        if not 0 <= self.loss < 1:
            raise ConfigError(f"loss {self.loss} is outside [0, 1)")

    def describe(self) -> str:
        return f"+{self.delay_s * 1000:g} ms each way, {self.loss:.0%} loss"


@dataclass(frozen=True, slots=True)
class ShapeWindow:
    shape: Shape
    began_at: float  # monotonic: from here, chunks read are shaped
    ended_at: float | None = None


class _Pump(threading.Thread):
    """One direction of one connection: read, hold until due, send in order."""

    def __init__(self, proxy: ShapingProxy, src: socket.socket, dst: socket.socket) -> None:
        super().__init__(name=f"firedrill-shaping-{proxy.name}", daemon=True)
        self.proxy, self.src, self.dst = proxy, src, dst

    def run(self) -> None:
        pending: deque[tuple[float, bytes]] = deque()
        eof = False
        try:
            while not self.proxy.stopping.is_set() and (pending or not eof):
                now = time.monotonic()
                while pending and pending[0][0] <= now:
                    self.dst.sendall(pending.popleft()[1])
                wait = 0.05 if not pending else max(0.0, min(0.05, pending[0][0] - now))
                if eof:
                    time.sleep(wait)
                    continue
                readable, _, _ = select.select([self.src], [], [], wait)
                if not readable:
                    continue
                data = self.src.recv(_RECV)
                if not data:
                    eof = True
                    continue
                due = time.monotonic() + self.proxy.hold_s()
                if pending:
                    due = max(due, pending[-1][0])  # TCP delivers in order
                pending.append((due, data))
            with contextlib.suppress(OSError):
                self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            for sock in (self.src, self.dst):
                with contextlib.suppress(OSError):
                    sock.close()


class ShapingProxy:
    """`ShapingProxy(("198.18.0.12", 6380), namespace="firedrill-1-client").start()`; clients in that
    namespace connect to 127.0.0.1:`port`."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        name: str = "shaping",
        namespace: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.upstream = upstream
        self.name = name
        self.namespace = namespace
        self.port = 0
        self.stopping = threading.Event()
        self.windows: list[ShapeWindow] = []
        self._shape = Shape()
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._ready = threading.Event()
        self._error: str | None = None
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"firedrill-shaping-{name}", daemon=True
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ShapingProxy:
        self._thread.start()
        if not self._ready.wait(5.0) or self._error:
            self.stop()
            raise StagingError(f"shaping proxy {self.name} did not start: {self._error or 'timeout'}")
        track(self)
        return self

    def stop(self) -> None:
        """Stop forwarding and close every socket (held bytes are dropped). Idempotent."""
        self.stopping.set()
        self.clear()
        for sock in [*([self._listener] if self._listener else []), *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()
        if self._thread.is_alive():
            self._thread.join(2.0)
        untrack(self)

    def __enter__(self) -> ShapingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the fault ---------------------------------------------------------------------------------
    def set_shape(self, shape: Shape) -> ShapeWindow:
        with self._lock:
            self._close_window()
            self._shape = shape
            window = ShapeWindow(shape, time.monotonic())
            self.windows.append(window)
        return window

    def clear(self) -> ShapeWindow | None:
        with self._lock:
            self._shape = Shape()
            return self._close_window()

    def hold_s(self) -> float:
        """How long the chunk read now is held back."""
        with self._lock:
            shape = self._shape
            lost = shape.loss > 0 and self._random.random() < shape.loss
        return shape.delay_s + (RETRANSMIT_S if lost else 0.0)

    def _close_window(self) -> ShapeWindow | None:
        if self.windows and self.windows[-1].ended_at is None:
            last = self.windows[-1]
            self.windows[-1] = ShapeWindow(last.shape, last.began_at, time.monotonic())
            return self.windows[-1]
        return None

    # ---- forwarding ----------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        try:
            if self.namespace:
                enter_namespace(self.namespace)  # this thread, and the pumps it starts, live in the zone
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(64)
            listener.settimeout(0.1)
            self._listener = listener
            self.port = int(listener.getsockname()[1])
        except (OSError, StagingError) as exc:
            self._error = str(exc)
            self._ready.set()
            return
        self._ready.set()
        while not self.stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5.0)
            except OSError:
                with contextlib.suppress(OSError):
                    client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(sock)
            _Pump(self, client, upstream).start()
            _Pump(self, upstream, client).start()
