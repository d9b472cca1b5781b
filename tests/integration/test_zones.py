"""Zones on one machine, for real: network namespaces, veth pairs, a bridge, cuts and heals (root).

Every test compares `ip netns list` and `ip -o link` before and after: whatever happens (a cut left
on, an exception, SIGTERM in the middle of a fault), the machine's network is as it was.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firedrill.faults.shaping import RETRANSMIT_S, Shape, ShapingProxy
from firedrill.faults.zones import ZoneFaults
from firedrill.measure_zones import ResourceProbe, measure_resources
from firedrill.probes import CanaryWriter, ProbeConfig
from firedrill.staging.zones import ZoneFabric, leftover_namespaces, namespaces_unavailable, sweep
from firedrill.timeline import EventKind, Timeline

ROOT = Path(__file__).resolve().parents[2]
FEATURE = ROOT / "firedrill" / "features" / "zone_loss.feature"

pytestmark = [pytest.mark.local]
needs_namespaces = pytest.mark.skipif(
    namespaces_unavailable() is not None, reason=namespaces_unavailable() or ""
)


def _machine() -> tuple[str, str]:
    """The machine's own network, as `ip` shows it: namespaces and root-namespace links."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return netns, links


def _ours() -> list[str]:
    """Servers of a zone staging and the reference application in a zone: their command line names a
    zone address (other stagings, the machine's own servers and other runs on loopback are not ours to
    judge)."""
    pattern = "postgres|redis-server|reference_app"
    out = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if " 198.18." in line]


@pytest.fixture
def unchanged() -> Iterator[None]:
    before = _machine()
    yield
    assert _machine() == before, "the machine's namespaces or links changed"
    assert not _ours(), f"staging processes left behind: {_ours()}"


class _AckServer:
    """A line server inside a zone: answers 'ok <seq>' to every '<seq>' line, one thread per client."""

    def __init__(self, fabric: ZoneFabric, zone: str) -> None:
        self.fabric, self.zone = fabric, zone
        self.address = (fabric.address(zone), 0)
        self._ready = threading.Event()
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()
        assert self._ready.wait(5)

    def _serve(self) -> None:
        self.fabric.enter_thread(self.zone)
        listener = socket.create_server(self.address)
        listener.settimeout(0.1)
        self.address = listener.getsockname()
        self._ready.set()
        while not self._stop:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()
        listener.close()

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as fh:
            for line in fh:
                fh.write(b"ok " + line)
                fh.flush()

    def stop(self) -> None:
        self._stop = True


class _LineSession:
    """A probe session writing seq lines to (host, port); the node is the server's address."""

    def __init__(self, address: tuple[str, int], timeout_s: float) -> None:
        self._sock = socket.create_connection(address, timeout=timeout_s)
        self._file = self._sock.makefile("rwb")
        self._node = f"{address[0]}:{address[1]}"

    def write(self, seq: int) -> str:
        self._file.write(f"{seq}\n".encode())
        self._file.flush()
        if self._file.readline() != f"ok {seq}\n".encode():
            raise ConnectionError("bad answer")
        return self._node

    def close(self) -> None:
        self._sock.close()


def _reach(fabric: ZoneFabric, zone: str, address: tuple[str, int], timeout_s: float = 0.3) -> bool:
    result: list[bool] = []

    def attempt() -> None:
        fabric.enter_thread(zone)
        try:
            session = _LineSession(address, timeout_s)
            session.write(1)
            session.close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join(5)
    return bool(result and result[0])


@needs_namespaces
def test_zones_reach_each_other_until_a_zone_is_lost_or_partitioned(unchanged: None) -> None:
    with ZoneFabric(["a", "b", "client"]) as fabric, ZoneFaults(fabric) as faults:
        server = _AckServer(fabric, "a")
        assert _reach(fabric, "b", server.address) and _reach(fabric, "client", server.address)
        with fabric.control():  # the control zone reaches every zone (out of band)
            assert socket.create_connection(server.address, timeout=1).close() is None

        lost = faults.lose("a")
        assert lost.returned_at >= lost.issued_at and lost.links[0].address == fabric.address("a")
        assert not _reach(fabric, "b", server.address) and not _reach(fabric, "client", server.address)
        assert _reach(fabric, "a", server.address), "inside the lost zone its own servers still answer"
        [healed] = faults.heal()
        assert healed.healed_at is not None and healed.healed_at >= healed.heal_issued_at  # type: ignore[operator]
        assert _reach(fabric, "b", server.address)

        faults.partition("a", with_zones=("client",))  # clients that stay with zone a
        assert _reach(fabric, "client", server.address) and _reach(fabric, "a", server.address)
        assert not _reach(fabric, "b", server.address)
        # The far side of the partition still reaches its own zones (and the control zone reaches b).
        assert _reach(fabric, "b", (fabric.address("b"), 1)) is False  # nothing listens there: refused
        faults.heal()
        assert _reach(fabric, "b", server.address)
        faults.lose("b")  # left on: leaving the blocks heals it and deletes everything
        server.stop()


@needs_namespaces
def test_a_zone_cut_of_known_length_is_measured_within_the_probe_deadline(unchanged: None) -> None:
    """Ground truth: zone a cut for exactly 0.5, 1.0 and 1.5 s; the probe in the client zone measures
    RTO from the fault event to its first acknowledged write after the heal."""
    rate, deadline = 100.0, 0.1
    errors = []
    with ZoneFabric(["a", "b", "client"]) as fabric, ZoneFaults(fabric) as faults:
        server = _AckServer(fabric, "a")
        for planned in (0.5, 1.0, 1.5):
            timeline = Timeline()

            def factory() -> _LineSession:
                fabric.enter_thread("client")
                return _LineSession(server.address, deadline)

            probe = CanaryWriter(
                "line@client", factory, timeline, ProbeConfig(rate_hz=rate, op_timeout_s=deadline)
            )
            probe.start()
            time.sleep(0.5)
            timeline.mark(EventKind.FAULT_ISSUED, "zone-lost a")
            window = faults.cut_for("a", planned)
            time.sleep(1.0)
            probe.stop()
            samples, events = timeline.snapshot()
            node = f"{server.address[0]}:{server.address[1]}"
            [row] = measure_resources(
                samples, events, [ResourceProbe("line", "line@client", "client", frozenset({node}), None)]
            )
            assert window.healed_at is not None and row.rto_s is not None
            truth = window.healed_at - events[0].mono  # fault issued to the heal in effect
            errors.append(row.rto_s - truth)
            assert row.status == "recovered" and row.failed_writes > 0
        server.stop()
    # A probe write started during the cut waits for a TCP retransmission that never comes in time:
    # recovery is seen by the next fresh attempt, at most one deadline plus one period later.
    assert all(-0.01 <= e <= deadline + 2 / rate + 0.05 for e in errors), errors
    print(f"zone cut ground truth: RTO error {', '.join(f'{e * 1000:+.1f} ms' for e in errors)}")


@needs_namespaces
def test_latency_between_zones_through_the_shaping_proxy(unchanged: None) -> None:
    with ZoneFabric(["a", "client"]) as fabric:
        server = _AckServer(fabric, "a")
        with ShapingProxy(server.address, namespace=fabric.namespace("client"), seed=1) as proxy:
            rtts: dict[str, float] = {}

            def measure(label: str) -> None:
                fabric.enter_thread("client")
                session = _LineSession(("127.0.0.1", proxy.port), 5.0)
                start = time.monotonic()
                for seq in range(5):
                    session.write(seq)
                rtts[label] = (time.monotonic() - start) / 5
                session.close()

            for label, shape in (
                ("plain", Shape()),
                ("delay", Shape(delay_s=0.05)),
                ("loss", Shape(loss=0.99)),
            ):
                window = proxy.set_shape(shape)
                thread = threading.Thread(target=measure, args=(label,))
                thread.start()
                thread.join(10)
                assert window.began_at > 0
            assert proxy.clear() is not None
        server.stop()
    assert rtts["plain"] < 0.02
    assert 0.1 <= rtts["delay"] < 0.1 + 0.03  # 50 ms each way
    assert rtts["loss"] >= 2 * RETRANSMIT_S * 0.9  # nearly every chunk "retransmitted" once, each way


@needs_namespaces
def test_staging_down_sweeps_the_namespaces_of_a_killed_run(tmp_path: Path, unchanged: None) -> None:
    script = (
        "import sys, time\n"
        "from firedrill.staging.zones import ZoneFabric\n"
        "f = ZoneFabric(['a', 'b']).start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGKILL)  # no teardown at all
    child.wait(10)
    mine = [name for name, owner in leftover_namespaces() if owner == child.pid]
    assert len(mine) == 4  # fabric, a, b, ctl
    assert sweep(dry_run=True) == [f"would remove namespace {n}" for n in sorted(mine)]
    lines = sweep()
    assert all(line.startswith("removed namespace") for line in lines) and len(lines) == 4
    assert not [n for n, owner in leftover_namespaces() if owner == child.pid]


def _pytest_feature(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", str(FEATURE), "-p", "no:cacheprovider", "-rs",
         "--firedrill-out", str(tmp_path / "out"), "-o", "log_cli=true", "--log-cli-level=INFO", *args],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )  # fmt: skip


def _evidence(tmp_path: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    records = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*/evidence.json")]
    return {r["scenario"]: r for r in records}


@needs_namespaces
def test_the_zone_scenarios_pass_with_an_rto_per_resource_and_exact_split_brain(
    tmp_path: Path, unchanged: None
) -> None:
    child = _pytest_feature(tmp_path, "-q")
    out, _ = child.communicate(timeout=240)
    assert child.returncode == 0, out[-4000:]
    assert "2 passed, 1 skipped" in out and "needs an AWS profile" in out
    records = _evidence(tmp_path)
    lost = records["Zone a is lost"]
    rows = {r["probe"]: r for r in lost["zones"]["resources"]}
    assert set(rows) == {"postgres@client", "redis@client", "service@client"}
    for row in rows.values():
        assert row["status"] == "recovered" and 0 < row["rto_s"] < 30 and row["verified"]
    assert rows["postgres@client"]["lost_writes"] == 0
    # The reference application in zone c, probed from the clients' zone, is one more resource: its
    # row is set against the stores it writes to, and it cannot be back before the slower of them.
    service = rows["service@client"]
    assert service["lost_writes"] == 0 and service["behind"] == ["postgres@client", "redis@client"]
    slowest = max(rows["postgres@client"]["rto_s"], rows["redis@client"]["rto_s"])
    # Each probe sees its store back between its last failed write and its first ack; the service's
    # client may find a store back earlier than the canary's, but never while that store still fails.
    floor = max(rows["postgres@client"]["rto_floor_s"], rows["redis@client"]["rto_floor_s"])
    assert service["store_rto_s"] == slowest and service["store_floor_s"] == floor <= slowest
    assert service["rto_s"] >= floor and service["ordered"], (service, rows)
    assert service["recovered_node"].count("198.18.") == 2  # through PostgreSQL and Redis, in their zones
    [order] = [c for c in lost["checks"] if c["name"] == "the service recovered no earlier than the store"]
    assert order["passed"], order
    app = [p for p in lost["zones"]["placements"] if p["server"] == "reference-app"]
    assert [(p["zone"], p["address"]) for p in app] == [("c", "198.18.0.13")]
    assert lost["zones"]["faults"][0]["kind"] == "zone-lost"
    split = records["Zone a is partitioned while its own clients keep writing to the Redis master"]
    rows = {r["probe"]: r for r in split["zones"]["resources"]}
    zone_a = rows["redis@a"]
    assert zone_a["lost_writes"] > 0 and zone_a["split_brain_exact"]
    assert zone_a["lost_seqs"] == zone_a["split_brain_lost_seqs"]
    assert rows["redis@client"]["lost_writes"] == 0
    print(
        "zone loss RTO: "
        + ", ".join(
            f"{r['probe']} {r['rto_s']:.3f} s lost {r['lost_writes']}" for r in lost["zones"]["resources"]
        )
        + f" (service {service['gap_s']:+.3f} s after the stores)"
        + f"; partition: redis@a lost {zone_a['lost_writes']} (split brain, exact)"
    )


@needs_namespaces
def test_sigterm_in_the_middle_of_a_zone_fault_leaves_nothing_behind(tmp_path: Path, unchanged: None) -> None:
    child = _pytest_feature(tmp_path, "-k", "lost")
    assert child.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 120
    for line in child.stdout:
        seen.append(line)
        if "fault_returned zone-lost a" in line:
            break
        assert time.monotonic() < deadline, "".join(seen[-30:])
    assert any("links down" in line for line in seen[-3:]), "".join(seen[-30:])
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=120)
    [record] = _evidence(tmp_path).values()
    assert record["verdict"] == "aborted", out[-3000:]
    assert record["zones"]["faults"][0]["healed_s"] is not None  # healed by the teardown


def test_without_namespaces_the_zone_scenarios_are_skipped_in_one_line(tmp_path: Path) -> None:
    """No `ip` on PATH (or not root): the zone scenarios are skipped before anything starts."""
    child = _pytest_feature(tmp_path, "-q", env={"PATH": "/nonexistent"})
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0, out[-3000:]
    assert "3 skipped" in out
    why = "zone scenarios need network namespaces: no `ip` binary (iproute2) on PATH"
    assert f"firedrill: 2 zone scenario(s) skipped: {why}" in out  # the one line, also in a quiet run
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*/evidence.json"))


def test_the_reason_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert (
        namespaces_unavailable() == "zone scenarios need network namespaces: firedrill is not running as root"
    )
