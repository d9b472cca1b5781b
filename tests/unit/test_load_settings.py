"""The load's settings and report, without any server: profile knobs, LoadSpec limits, the step's
phrase, the generator against a fake store, and the load section of both reports."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from firedrill.config import load_profiles
from firedrill.drills.service import gap_phase
from firedrill.errors import ConfigError, ProbeFailure
from firedrill.evidence import EvidenceRecord, load_evidence
from firedrill.load.accounting import LoadSamples, LoadShape, summarize
from firedrill.load.generator import LoadGenerator, LoadSpec
from firedrill.report.load_chart import build_load_svg, seq_ranges
from firedrill.report.run_report import render_html, render_markdown
from firedrill.steps.load import LOAD
from firedrill.targets.knobs import pg_staging_config, redis_staging_config, replication_mode, sync_commit
from tests.fixtures.evidence_factory import build_failover_record


def test_profile_knobs_map_onto_the_staging(tmp_path: Path) -> None:
    cfg = tmp_path / "firedrill.toml"
    cfg.write_text(
        "[profiles.old]\nsync_replication = false\n"
        "[profiles.q]\nreplication = 'quorum'\nsynchronous_commit = 'remote_write'\n"
        "redis = { min_replicas_to_write = 1, appendfsync = 'always' }\n"
        "load = { writers = 4, rate_per_s = 500, read_share = 0.2, row_bytes = 512 }\n"
    )
    profiles = load_profiles(cfg)
    old = pg_staging_config(profiles["old"])
    assert (old.sync_replication, old.quorum, old.synchronous_commit) == (False, False, "on")
    q = pg_staging_config(profiles["q"])
    assert (q.sync_replication, q.quorum, q.synchronous_commit) == (True, True, "remote_write")
    r = redis_staging_config(profiles["q"])
    assert (r.min_replicas_to_write, r.appendonly, r.appendfsync) == (1, True, "always")
    assert profiles["q"].load is not None and profiles["q"].load.writers == 4
    assert pg_staging_config(profiles["local"]).sync_replication is True


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("replication = 'sometimes'", "replication: Input should be 'sync', 'async' or 'quorum'"),
        ("synchronous_commit = 'maybe'", "synchronous_commit: Input should be"),
        ("replication = 'sync'\nsync_replication = false", "contradicts replication = 'sync'"),
        ("load = { writers = 0 }", "load.writers: Input should be greater than or equal to 1"),
        ("redis = { min_replicas_to_write = 3 }", "redis.min_replicas_to_write"),
        ("service = { url = 'ftp://x' }", "service.url"),
    ],
)
def test_bad_knobs_are_one_line(tmp_path: Path, body: str, needle: str) -> None:
    cfg = tmp_path / "firedrill.toml"
    cfg.write_text(f"[profiles.x]\n{body}\n")
    with pytest.raises(ConfigError) as info:
        load_profiles(cfg)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_step_words_are_checked() -> None:
    assert replication_mode("quorum") == "quorum" and sync_commit("off") == "off"
    with pytest.raises(ConfigError, match="replication must be synchronous, asynchronous or quorum"):
        replication_mode("eventual")
    with pytest.raises(ConfigError, match="synchronous_commit must be one of on, remote_write"):
        sync_commit("sometimes")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"writers": 0}, "0 writers is outside 1..64"),
        ({"rate_per_s": 0}, "0 writes per second is outside"),
        ({"read_share": 0.99}, "a read share of 99% is outside 0%..95%"),
        ({"row_bytes": -1}, "-1-byte rows are outside"),
    ],
)
def test_load_spec_limits(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        LoadSpec(**kwargs)  # type: ignore[arg-type]


def test_the_load_phrase_takes_optional_reads_and_row_size() -> None:
    m = LOAD.fullmatch(
        "a background load of 8 writers at 2000 writes per second with 20% reads and 512-byte rows"
    )
    assert m is not None and (m["writers"], m["rate"], m["reads"], m["row"]) == ("8", "2000", "20", "512")
    m = LOAD.fullmatch("a background load of 1 writer at 50.5 writes per second")
    assert m is not None and m["reads"] is None and m["row"] is None
    assert LOAD.fullmatch("a background load of 8 writers at 2000 writes per second with 512-byte rows")


class _FakeStore:
    """Acknowledges every write except during `down` (seconds from start); thread-safe."""

    def __init__(self, down: tuple[float, float]) -> None:
        self.rows: set[int] = set()
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.down = down

    def session(self) -> _FakeSession:
        return _FakeSession(self)


class _FakeSession:
    def __init__(self, store: _FakeStore) -> None:
        self.store = store

    def write(self, seq: int, writer: int) -> None:
        t = time.monotonic() - self.store.t0
        if self.store.down[0] <= t < self.store.down[1]:
            raise ProbeFailure("ConnectionRefused")
        with self.store.lock:
            self.store.rows.add(seq)

    def read(self, seq: int) -> None:
        if seq not in self.store.rows:
            raise ProbeFailure("ReadMissing")

    def close(self) -> None:
        pass


def test_generator_keeps_its_rate_numbers_every_write_once_and_stops() -> None:
    store = _FakeStore(down=(0.3, 0.45))
    spec = LoadSpec(writers=4, rate_per_s=400, read_share=0.25, backoff_s=0.01)
    gen = LoadGenerator(store.session, spec, seed=1)
    gen.start()
    time.sleep(0.8)
    gen.stop()
    assert not any(t.is_alive() for t in gen._threads)
    s = gen.samples()
    writes = [s.seq[i] for i in range(len(s)) if not s.is_read(i)]
    assert len(writes) == len(set(writes)) and min(writes) == 1  # global, unique sequence numbers
    assert s.errors["ConnectionRefused"] > 0
    assert gen.started_at is not None and gen.stopped_at is not None
    stats = summarize(
        s,
        LoadShape("fake", "fake", 4, 400, 0.25, 0),
        t0=gen.started_at,
        started=gen.started_at,
        stopped=gen.stopped_at,
        fault_at=store.t0 + 0.3,
        recovered_at=None,
        present=frozenset(store.rows),
    )
    assert stats.lost_writes == 0 and stats.reached, stats.achieved_per_s
    assert stats.read_share + 0.1 > 0.15 and stats.reads_ok > 10
    assert stats.recovered_s is not None and stats.recovered_s >= 0.45 - 0.01


def test_seq_ranges() -> None:
    assert seq_ranges([5, 1, 2, 3, 9, 10]) == "1-3, 5, 9-10"
    assert seq_ranges(list(range(1, 501)), limit=200).startswith("1-500")
    assert seq_ranges([1, 3, 5, 7], limit=2) == "1, 3 and 2 more (all in evidence.json)"
    assert seq_ranges([]) == ""


def _with_load(record: EvidenceRecord) -> EvidenceRecord:
    fault = next(e.t_s for e in record.timeline if e.kind == "fault_issued")
    # a synthetic load around the record's fault: 2 s at ~1000/s, 0.2 s outage, 3 lost writes
    s = LoadSamples()
    seq = 0
    t = fault - 1.0
    while t < fault + 1.2:
        seq += 1
        down = fault <= t < fault + 0.2
        s.add(seq, t, t + (0.2 if down else 0.001), ok=not down)
        t += 0.001
    present = frozenset(range(1, seq + 1)) - {990, 991, 992}
    stats = summarize(
        s,
        LoadShape("postgres", "test", 8, 1000, 0.0, 64),
        t0=0.0,
        started=fault - 1.0,
        stopped=fault + 1.2,
        fault_at=fault,
        recovered_at=fault + 0.2,
        present=present,
    )
    return record.model_copy(update={"load": stats})


def test_the_report_shows_the_load_with_its_chart_and_lost_seqs(tmp_path: Path) -> None:
    record = _with_load(build_failover_record())
    html = render_html(record)
    assert html.count('id="background-load"') == 1 and 'class="load-chart"' in html
    assert "990-992" in html and "requested 1,000/s" in html
    md = render_markdown(record)
    assert "## Background load" in md and "990-992" in md and "| during |" in md
    svg = build_load_svg(record)
    assert svg.startswith("<svg") and "<script" not in svg
    # evidence 1.2 round trip, and a 1.1 record without load still loads
    path = tmp_path / "e.json"
    path.write_text(record.model_dump_json())
    assert load_evidence(path).load == record.load
    old = json.loads(build_failover_record().model_dump_json())
    old.pop("load"), old.pop("service")
    old["schema_version"] = "1.1"
    path.write_text(json.dumps(old))
    assert load_evidence(path).load is None
    assert 'id="background-load"' not in render_html(load_evidence(path))


def test_the_phase_between_store_and_service_is_named_from_what_the_service_answered() -> None:
    assert gap_phase(Counter({"HTTP503:PoolTimeout": 3, "HTTP503:OperationalError": 1}), 1.2, 0.02) == (
        "pool reconnect"
    )
    assert gap_phase(Counter({"HTTP503:OperationalError": 4}), 0.1, 0.02) == "stale pooled connections"
    assert gap_phase(Counter({"ConnectError": 2}), 0.5, 0.02) == "application unreachable"
    assert gap_phase(Counter(), 0.03, 0.02) == ""  # back with the store, within two probe periods
    assert gap_phase(Counter(), 0.5, 0.02) == "no failed request seen (probe resolution)"
    assert gap_phase(Counter({"HTTP500": 1}), 0.5, 0.02) == "application recovery"
    assert gap_phase(Counter(), None, 0.02) == ""
