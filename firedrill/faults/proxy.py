"""A loopback TCP fault proxy: forwards 127.0.0.1:<port> to a target and cuts the link on demand.

Put it between a client and a server (give the client the proxy's port instead of the server's) and
`cut()` the network for an exact window:

* `blackhole`: nothing flows either way and new connections are accepted but held (no upstream
  connect, no bytes); when the window ends everything resumes where it stopped, like a partition
  that heals before TCP gives up. Clients see hung calls.
* `reset`: every open connection is closed with RST on both sides and new connections are refused
  (the listening socket is closed, so a SYN gets RST from the kernel) for the window. Clients see
  errors at once.

Timing is on the monotonic clock and recorded where it takes effect: `CutWindow.began_at` when the
event loop applied the cut, `ended_at` when forwarding or listening resumed. That pair is the ground
truth of a calibration. One selector thread does all the I/O (no thread per connection); callers
talk to it through a command queue and a wake-up socket, and `stop()` always finishes, also with a
cut in progress or a dead loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Generic, TypeVar

from firedrill.errors import ConfigError, StagingError
from firedrill.staging.common import track, untrack

log = logging.getLogger(__name__)

T = TypeVar("T")

_RECV = 65536
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST instead of FIN
_COMMAND_TIMEOUT_S = 5.0


class CutMode(StrEnum):
    BLACKHOLE = "blackhole"
    RESET = "reset"


@dataclass(frozen=True, slots=True)
class CutWindow:
    """One cut as it happened. Times are `time.monotonic()` seconds."""

    mode: CutMode
    planned_s: float | None  # None: open-ended, ended by end_cut()
    began_at: float
    ended_at: float | None = None
    connections: int = 0  # held (blackhole) or reset (reset) when the cut began
    held_new: int = 0  # blackhole: connections accepted and held during the window

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.began_at

    def describe(self) -> str:
        what = (
            f"{self.connections} connection(s) held, {self.held_new} new held"
            if self.mode is CutMode.BLACKHOLE
            else f"{self.connections} connection(s) reset, new ones refused"
        )
        took = "still cut" if self.duration_s is None else f"{self.duration_s * 1000:.1f} ms"
        return f"{self.mode.value} cut, {took} ({what})"


@dataclass(eq=False)
class _Pair:
    client: socket.socket
    upstream: socket.socket | None = None
    connected: bool = False
    to_up: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    client_eof: bool = False
    up_eof: bool = False


@dataclass(frozen=True, slots=True)
class _Side:
    pair: _Pair
    is_client: bool


class _Command(Generic[T]):
    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the caller's thread, never lost in the loop
            self.error = exc
        finally:
            self.done.set()


def _rst_close(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    with contextlib.suppress(OSError):
        sock.close()


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # SO_REUSEPORT lets a never-listening "reservation" socket hold the port while the listener is
    # closed for a reset window, so nobody else can take the port and the listener can come back.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class FaultProxy:
    """`with FaultProxy(("127.0.0.1", 5432)) as proxy:` then connect clients to `proxy.port`."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        name: str = "proxy",
        host: str = "127.0.0.1",
        buffer_bytes: int = 256 * 1024,
    ) -> None:
        if host not in ("127.0.0.1", "localhost"):
            raise ConfigError(f"the fault proxy listens on loopback only, not {host!r}")
        self.upstream = upstream
        self.name = name
        self.host = "127.0.0.1"
        self._cap = buffer_bytes
        self.port = 0
        self.accepted = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._sel: selectors.BaseSelector | None = None
        self._registered: dict[socket.socket, int] = {}
        self._reserve: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        # Insertion-ordered, so a blackhole releases its held connections first-come first-served,
        # as the server's accept queue would have taken them.
        self._pairs: dict[_Pair, None] = {}
        self._commands: queue.SimpleQueue[_Command[Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._running = False
        self._cut: CutWindow | None = None
        self._cut_until: float | None = None
        self._windows: list[CutWindow] = []
        self._cond = threading.Condition()

    # ---- lifecycle ------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        if self._thread is not None:
            raise StagingError(f"fault proxy {self.name} already started")
        try:
            self._reserve = _bound_socket(self.host, 0)
            self.port = int(self._reserve.getsockname()[1])
            self._sel = selectors.DefaultSelector()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._sel.register(self._wake_r, selectors.EVENT_READ, None)
            self._open_listener()
        except OSError as exc:
            self._close_all()
            raise StagingError(f"fault proxy {self.name}: cannot listen on loopback: {exc}") from exc
        self._running = True
        track(self)
        self._thread = threading.Thread(target=self._loop, name=f"firedrill-proxy-{self.name}", daemon=True)
        self._thread.start()
        log.debug("fault proxy %s: %s -> %s:%d", self.name, self.address, *self.upstream)
        return self

    def stop(self) -> None:
        """Close everything (buffered, undelivered bytes are dropped). Idempotent, never raises."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._running = False
            self._wake()
            thread.join(2.0)
        self._running = False
        # Normally the loop closed everything on its way out; if it is wedged, close from here anyway
        # (its next call then fails and ends it): the ports must be free when stop() returns.
        self._close_all()
        self._thread = None
        with self._cond:
            if self._cut is not None:
                self._windows.append(replace(self._cut, ended_at=time.monotonic()))
                self._cut = None
                self._cut_until = None
            self._cond.notify_all()
        untrack(self)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- faults ---------------------------------------------------------------------------------
    def cut(self, duration_s: float, mode: CutMode | str = CutMode.BLACKHOLE) -> CutWindow:
        """Cut for `duration_s`; returns once the cut is in effect. It ends by itself, on the loop's
        monotonic clock, so the window does not depend on the caller waking up in time."""
        if not 0 < duration_s <= 3600:
            raise ConfigError(f"cut duration {duration_s} s is outside (0, 3600]")
        return self._begin(CutMode(mode), duration_s)

    def begin_cut(self, mode: CutMode | str = CutMode.BLACKHOLE) -> CutWindow:
        """An open-ended cut, ended by `end_cut()` (or `stop()`)."""
        return self._begin(CutMode(mode), None)

    def end_cut(self) -> CutWindow | None:
        """End the cut now if one is on; returns the last finished window (None if never cut)."""
        self._call(self._end_in_loop)
        return self.last_window

    def wait_cut(self, timeout_s: float) -> CutWindow:
        """Block until no cut is on; returns the last finished window."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._cut is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StagingError(f"fault proxy {self.name}: cut still on after {timeout_s:g} s")
                self._cond.wait(left)
            if not self._windows:
                raise StagingError(f"fault proxy {self.name} was never cut")
            return self._windows[-1]

    @property
    def cutting(self) -> bool:
        with self._cond:
            return self._cut is not None

    @property
    def last_window(self) -> CutWindow | None:
        with self._cond:
            return self._windows[-1] if self._windows else None

    @property
    def windows(self) -> list[CutWindow]:
        with self._cond:
            return list(self._windows)

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def _begin(self, mode: CutMode, duration_s: float | None) -> CutWindow:
        return self._call(lambda: self._begin_in_loop(mode, duration_s))

    # ---- talking to the loop ------------------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        thread = self._thread
        if thread is None or not thread.is_alive() or not self._running:
            raise StagingError(f"fault proxy {self.name} is not running")
        command: _Command[T] = _Command(fn)
        self._commands.put(command)
        self._wake()
        if not command.done.wait(_COMMAND_TIMEOUT_S):
            raise StagingError(f"fault proxy {self.name} did not answer within {_COMMAND_TIMEOUT_S:g} s")
        if command.error is not None:
            raise command.error
        return command.result  # type: ignore[return-value]

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    # ---- the loop (everything below runs on the proxy thread) -----------------------------------
    def _loop(self) -> None:
        sel = self._sel
        assert sel is not None
        try:
            while self._running:
                timeout = None
                if self._cut_until is not None:
                    timeout = max(0.0, self._cut_until - time.monotonic())
                events = sel.select(timeout)
                if self._cut_until is not None and time.monotonic() >= self._cut_until:
                    self._end_in_loop()
                for key, mask in events:
                    if key.fileobj is self._wake_r:
                        self._drain_commands()
                    elif key.fileobj is self._listener:
                        self._accept()
                    elif isinstance(key.data, _Side):
                        self._service(key.data, mask)
        except Exception:  # a bug here must not leave sockets open: log it, tear down below
            log.exception("fault proxy %s: event loop failed", self.name)
        finally:
            self._running = False
            self._reject_commands()
            self._close_all()

    def _reject_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command.error = StagingError(f"fault proxy {self.name} stopped")
            command.done.set()

    def _drain_commands(self) -> None:
        if self._wake_r is not None:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command.run()

    def _begin_in_loop(self, mode: CutMode, duration_s: float | None) -> CutWindow:
        if self._cut is not None:
            raise StagingError(f"fault proxy {self.name}: a {self._cut.mode.value} cut is already on")
        began = time.monotonic()
        count = len(self._pairs)
        if mode is CutMode.RESET:
            for pair in list(self._pairs):
                self._drop(pair, reset=True)
            self._close_listener()
        window = CutWindow(mode=mode, planned_s=duration_s, began_at=began, connections=count)
        with self._cond:
            self._cut = window
            self._cut_until = None if duration_s is None else began + duration_s
        if mode is CutMode.BLACKHOLE:
            for pair in list(self._pairs):
                self._sync(pair)
        return window

    def _end_in_loop(self) -> None:
        cut = self._cut
        if cut is None:
            return
        ended = time.monotonic()
        with self._cond:
            self._cut = None
            self._cut_until = None
        if cut.mode is CutMode.RESET:
            try:
                self._open_listener()
            except OSError as exc:  # the reserved port should always come back; say so if not
                log.error("fault proxy %s: cannot listen again on %d: %s", self.name, self.port, exc)
        else:
            for pair in list(self._pairs):
                if pair.upstream is None:
                    self._connect_upstream(pair)
                if pair in self._pairs:
                    self._sync(pair)
        with self._cond:
            self._windows.append(replace(cut, ended_at=ended))
            self._cond.notify_all()

    def _blackholed(self) -> bool:
        return self._cut is not None and self._cut.mode is CutMode.BLACKHOLE

    def _open_listener(self) -> None:
        assert self._sel is not None
        listener = _bound_socket(self.host, self.port)
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._sel.register(listener, selectors.EVENT_READ, None)

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(listener)
        with contextlib.suppress(OSError):
            listener.close()

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("fault proxy %s: accept failed: %s", self.name, exc)
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client=client)
            self._pairs[pair] = None
            self.accepted += 1
            if self._blackholed():
                assert self._cut is not None
                with self._cond:
                    self._cut = replace(self._cut, held_new=self._cut.held_new + 1)
            else:
                self._connect_upstream(pair)
            if pair in self._pairs:
                self._sync(pair)

    def _connect_upstream(self, pair: _Pair) -> None:
        up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        up.setblocking(False)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = up.connect_ex(self.upstream)
        if err not in (0, errno.EINPROGRESS):
            up.close()
            self._drop(pair, reset=True)  # mirror a refused server as a reset client connection
            return
        pair.upstream = up
        pair.connected = err == 0

    def _service(self, side: _Side, mask: int) -> None:
        pair = side.pair
        if pair not in self._pairs:
            return
        if not side.is_client and not pair.connected:
            assert pair.upstream is not None
            if pair.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._drop(pair, reset=True)
                return
            pair.connected = True
        try:
            if mask & selectors.EVENT_READ:
                self._read(pair, side.is_client)
            if pair in self._pairs:
                self._flush(pair)
        except OSError:  # reset or broken pipe on one side: pass the reset on to the other
            self._drop(pair, reset=True)
            return
        if pair in self._pairs:
            self._sync(pair)

    def _read(self, pair: _Pair, from_client: bool) -> None:
        sock = pair.client if from_client else pair.upstream
        assert sock is not None
        try:
            data = sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        if from_client:
            if data:
                pair.to_up += data
                self.bytes_up += len(data)
            else:
                pair.client_eof = True
        elif data:
            pair.to_client += data
            self.bytes_down += len(data)
        else:
            pair.up_eof = True

    def _flush(self, pair: _Pair) -> None:
        if self._blackholed():
            return
        for buf, sock in ((pair.to_up, pair.upstream), (pair.to_client, pair.client)):
            if buf and sock is not None and (sock is pair.client or pair.connected):
                try:
                    sent = sock.send(buf)
                except (BlockingIOError, InterruptedError):
                    continue
                del buf[:sent]
        # One side closed and everything it sent is delivered: close both (FIN), as a server would.
        if (pair.client_eof and not pair.to_up) or (pair.up_eof and not pair.to_client):
            self._drop(pair, reset=False)

    def _sync(self, pair: _Pair) -> None:
        """Register each socket of the pair for exactly what it may do now."""
        client_ev = up_ev = 0
        if not self._blackholed():
            if not pair.client_eof and len(pair.to_up) < self._cap:
                client_ev |= selectors.EVENT_READ
            if pair.to_client:
                client_ev |= selectors.EVENT_WRITE
            if pair.upstream is not None:
                if not pair.connected:
                    up_ev = selectors.EVENT_WRITE
                else:
                    if not pair.up_eof and len(pair.to_client) < self._cap:
                        up_ev |= selectors.EVENT_READ
                    if pair.to_up:
                        up_ev |= selectors.EVENT_WRITE
        self._register(pair.client, client_ev, _Side(pair, True))
        if pair.upstream is not None:
            self._register(pair.upstream, up_ev, _Side(pair, False))

    def _register(self, sock: socket.socket, events: int, data: _Side) -> None:
        assert self._sel is not None
        current = self._registered.get(sock, 0)
        if events == current:
            return
        if not events:
            self._unregister(sock)
        elif current:
            self._sel.modify(sock, events, data)
            self._registered[sock] = events
        else:
            self._sel.register(sock, events, data)
            self._registered[sock] = events

    def _unregister(self, sock: socket.socket) -> None:
        if self._registered.pop(sock, 0) and self._sel is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(sock)

    def _drop(self, pair: _Pair, *, reset: bool) -> None:
        self._pairs.pop(pair, None)
        for sock in (pair.client, pair.upstream):
            if sock is None:
                continue
            self._unregister(sock)
            if reset:
                _rst_close(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()

    def _close_all(self) -> None:
        """Close every socket. Runs on the loop thread at its end, or on the caller's if it died."""
        for pair in list(self._pairs):
            self._drop(pair, reset=True)
        self._close_listener()
        for sock in (self._reserve, self._wake_r, self._wake_w):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._reserve = self._wake_r = self._wake_w = None
        sel, self._sel = self._sel, None
        if sel is not None:
            with contextlib.suppress(OSError):
                sel.close()
        self._registered.clear()
