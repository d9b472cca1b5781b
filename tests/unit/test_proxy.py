"""The fault proxy on real loopback sockets: forwarding, blackhole and reset windows, teardown.

Timing assertions are orderings and lower bounds (a reply never arrives before the window ended),
never tight upper bounds: the machine is shared.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from firedrill.errors import ConfigError, StagingError
from firedrill.faults.proxy import CutMode, FaultProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass  # the proxy resets connections on purpose


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = _Server(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[0], int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: tuple[str, int]) -> Iterator[FaultProxy]:
    with FaultProxy(echo, name="test") as p:
        yield p


def _client(proxy: FaultProxy, timeout_s: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout_s)
    sock.settimeout(timeout_s)
    return sock


def _roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_forwards_both_ways_for_many_connections(proxy: FaultProxy) -> None:
    clients = [_client(proxy) for _ in range(5)]
    for i, c in enumerate(clients):
        assert _roundtrip(c, f"hello {i}".encode()) == f"hello {i}".encode()
    big = bytes(range(256)) * 8192  # 2 MiB, more than the proxy's per-direction buffer
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(_roundtrip(clients[0], big)))
    reader.start()
    reader.join(20)
    assert result == [big]
    assert proxy.accepted == 5 and proxy.bytes_up >= len(big) and proxy.bytes_down >= len(big)
    for c in clients:
        c.close()


def test_blackhole_holds_traffic_for_the_window_then_delivers_it(proxy: FaultProxy) -> None:
    held = _client(proxy)
    assert _roundtrip(held, b"before") == b"before"
    window = proxy.cut(0.3, CutMode.BLACKHOLE)
    sent_at = time.monotonic()
    held.sendall(b"during")
    late = _client(proxy)  # accepted, but held too
    late.sendall(b"new")
    assert held.recv(16) == b"during"
    answered_at = time.monotonic()
    assert late.recv(16) == b"new"
    done = proxy.wait_cut(5)
    assert done.began_at == window.began_at <= sent_at
    assert done.ended_at is not None and done.ended_at <= answered_at
    assert done.duration_s is not None and done.duration_s >= 0.3
    assert answered_at - sent_at >= 0.3 - (sent_at - window.began_at) - 1e-3
    assert done.connections == 1 and done.held_new == 1 and done.mode is CutMode.BLACKHOLE
    assert _roundtrip(held, b"after") == b"after"  # the same connection carries on


def test_reset_closes_connections_and_refuses_new_ones_for_the_window(proxy: FaultProxy) -> None:
    victim = _client(proxy)
    assert _roundtrip(victim, b"x") == b"x"
    window = proxy.cut(0.3, CutMode.RESET)
    with pytest.raises(ConnectionResetError):
        victim.sendall(b"y")
        victim.recv(16)
    refused_at = []
    while proxy.cutting:
        try:
            socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
            break  # only possible once the window is over
        except ConnectionRefusedError:
            refused_at.append(time.monotonic())
        time.sleep(0.01)
    done = proxy.wait_cut(5)
    assert refused_at, "no connection attempt was refused during the window"
    assert done.ended_at is not None and all(window.began_at <= t <= done.ended_at for t in refused_at)
    assert done.duration_s is not None and done.duration_s >= 0.3
    assert done.connections == 1
    after = _client(proxy)  # listening again on the same port
    assert _roundtrip(after, b"back") == b"back"


def test_open_ended_cut_until_end_cut(proxy: FaultProxy) -> None:
    c = _client(proxy)
    proxy.begin_cut("blackhole")
    c.sendall(b"wait")
    c.settimeout(0.2)
    with pytest.raises(TimeoutError):
        c.recv(16)
    assert proxy.cutting
    with pytest.raises(StagingError, match="already on"):
        proxy.cut(0.1)
    window = proxy.end_cut()
    assert window is not None and window.planned_s is None and (window.duration_s or 0) >= 0.2
    c.settimeout(5)
    assert c.recv(16) == b"wait"
    assert proxy.windows == [window]


def test_a_dead_upstream_shows_as_a_reset_connection() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = ("127.0.0.1", int(s.getsockname()[1]))  # bound, never listening: refuses
        with FaultProxy(dead) as proxy, pytest.raises((ConnectionResetError, BrokenPipeError)):
            c = _client(proxy)  # the reset may already hit the connect
            c.sendall(b"hello")
            if not c.recv(16):
                raise ConnectionResetError("closed without a reset")


def test_stop_during_a_cut_frees_the_port_and_is_idempotent(echo: tuple[str, int]) -> None:
    proxy = FaultProxy(echo).start()
    c = _client(proxy)
    proxy.cut(60, CutMode.BLACKHOLE)
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 3
    proxy.stop()
    window = proxy.last_window
    assert window is not None and window.ended_at is not None and not proxy.cutting
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1)
    c.settimeout(2)
    with pytest.raises(OSError):  # reset (or closed) with the proxy
        c.sendall(b"x")
        if not c.recv(1):
            raise OSError("closed")
    with pytest.raises(StagingError, match="not running"):
        proxy.cut(0.1)


def test_bad_arguments_are_refused(echo: tuple[str, int]) -> None:
    with pytest.raises(ConfigError):
        FaultProxy(echo, host="0.0.0.0")
    with FaultProxy(echo) as proxy:
        with pytest.raises(ConfigError):
            proxy.cut(0)
        with pytest.raises(ValueError):
            proxy.cut(0.1, "drop")
        with pytest.raises(StagingError, match="never cut"):
            proxy.wait_cut(0.1)
