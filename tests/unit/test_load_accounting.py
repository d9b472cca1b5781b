"""The background load's accounting on synthetic samples: exact loss, the outage the load saw,
windows, phases and the achieved-rate finding, edge cases first."""

from __future__ import annotations

import pytest

from firedrill.evidence import EvidenceRecord
from firedrill.evidence_load import LoadStats
from firedrill.load.accounting import (
    LoadSamples,
    LoadShape,
    achieved_rate,
    load_loss,
    load_outage,
    merge,
    percentile,
    phases,
    summarize,
    window_width,
    windows,
)

approx = pytest.approx
SHAPE = LoadShape("postgres", "test client", writers=2, requested_per_s=100.0, read_share=0.0, row_bytes=0)


def steady(seqs: range, t0: float, step: float, dur: float = 0.002, ok: bool = True) -> LoadSamples:
    s = LoadSamples()
    for k, seq in enumerate(seqs):
        start = t0 + k * step
        s.add(seq, start, start + dur, ok=ok)
    return s


def test_no_samples_is_a_valid_empty_result() -> None:
    empty = LoadSamples()
    loss = load_loss(empty, frozenset())
    assert (loss.acknowledged, loss.lost, loss.window_s, loss.lost_from) == (0, 0, 0.0, None)
    assert load_outage(empty, 1.0).first_failure_at is None
    assert windows(empty, 0.0, 0.0, 0.0, 0.1) == []
    assert percentile([], 50) is None
    stats = summarize(
        empty, SHAPE, t0=0, started=0, stopped=1, fault_at=None, recovered_at=None, present=None
    )
    assert stats.attempted == 0 and stats.verified is False and stats.lost_writes is None
    assert stats.reached is False and "cannot drive" in stats.note


def test_loss_is_exact_over_every_acknowledged_write() -> None:
    s = steady(range(1, 101), 0.0, 0.01)  # seq 1..100 acked at k*0.01 + 0.002
    present = frozenset(range(1, 101)) - {40, 41, 90}
    loss = load_loss(s, present)
    assert loss.acknowledged == 100 and loss.surviving == 97 and loss.lost == 3
    assert loss.lost_seqs == (40, 41, 90)
    assert loss.lost_from == approx(0.392) and loss.lost_to == approx(0.892)
    # window: last surviving ack before seq 90's ack (seq 89 at 0.882) to 0.892
    assert loss.window_s == approx(0.01)


def test_everything_lost_still_has_a_window_from_the_first_lost_start() -> None:
    s = steady(range(1, 11), 5.0, 0.1)
    loss = load_loss(s, frozenset())
    assert loss.lost == 10 and loss.window_s == approx(5.902 - 5.0)


def test_a_seq_counts_once_at_its_earliest_ack_and_failures_present_are_unknown_commits() -> None:
    s = LoadSamples()
    s.add(1, 0.0, 0.5, ok=True)
    s.add(1, 0.1, 0.2, ok=True)  # same seq acked earlier by a retry
    s.add(2, 0.3, 0.8, ok=False)  # failed for the client, but committed
    s.add(3, 0.3, 0.8, ok=False)  # failed and absent: not a loss
    s.add(7, 0.4, 0.41, ok=True, read=True)  # reads never count as writes
    loss = load_loss(s, frozenset({1, 2}))
    assert loss.acknowledged == 1 and loss.lost == 0 and loss.unacknowledged_present == 1


def test_outage_recovery_ignores_writes_in_flight_when_the_first_failure_began() -> None:
    s = LoadSamples()
    s.add(1, 9.9, 9.95, ok=True)
    s.add(2, 10.0, 10.3, ok=False)  # first failure, began at the fault
    s.add(3, 9.99, 10.4, ok=True)  # in flight before the failure began: not a recovery
    s.add(4, 10.5, 10.6, ok=False)
    s.add(5, 10.7, 10.75, ok=True)  # recovery
    s.add(6, 10.8, 10.81, ok=True, read=True)
    out = load_outage(s, 10.0)
    assert out.first_failure_at == approx(10.3) and out.recovered_at == approx(10.75)
    assert load_outage(steady(range(1, 5), 0, 0.1), 0.15).first_failure_at is None  # no outage seen


def test_windows_count_by_ack_time_and_hold_latency_percentiles() -> None:
    s = steady(range(1, 101), 0.0, 0.01, dur=0.001)  # acks 0.001 .. 0.991
    s.add(200, 0.5, 0.6, ok=False)
    w = windows(s, 0.0, 1.0, -2.0, 0.25)
    assert [x.t_s for x in w] == approx([2.0, 2.25, 2.5, 2.75])
    assert sum(x.ok for x in w) == 100 and sum(x.failed for x in w) == 1
    assert w[0].ops_per_s == approx(w[0].ok / 0.25)
    assert w[1].p50_ms == approx(1.0) and w[1].p99_ms == approx(1.0)
    last = windows(s, 0.0, 0.9, 0.0, 0.25)[-1]  # a short last window divides by its own width
    assert last.dur_s == approx(0.15)
    assert window_width(3.0) == 0.1 and window_width(30.0) == 0.5 and window_width(1e6) > 300


def test_phases_split_at_fault_and_recovery_and_rate_comes_from_before() -> None:
    s = merge([steady(range(1, 101), 0.0, 0.01), steady(range(101, 131), 1.5, 0.01)])
    s.add(500, 1.0, 1.2, ok=False)
    found = phases(s, started=0.0, stopped=1.8, fault_at=1.0, recovered_at=1.5, t0=0.0)
    assert [p.name for p in found] == ["before", "during", "after"]
    before, during, after = found
    assert before.attempted == 100 and before.attempted_per_s == approx(100.0)
    assert during.failed == 1 and during.ok == 0 and during.p50_ms is None
    assert after.ok == 30 and after.ok_per_s == approx(100.0)
    assert achieved_rate(found) == approx(100.0)
    # a fault right at the start: no "before"; the rate comes from "after"
    short = phases(s, started=1.0, stopped=1.8, fault_at=1.0, recovered_at=1.5, t0=0.0)
    assert [p.name for p in short] == ["during", "after"]
    assert achieved_rate(short) == approx(100.0)
    assert [p.name for p in phases(s, started=0, stopped=2, fault_at=None, recovered_at=None, t0=0)] == [
        "before"
    ]
    never = phases(s, started=0.0, stopped=1.8, fault_at=1.0, recovered_at=None, t0=0.0)
    assert [p.name for p in never] == ["before", "during"]


def test_a_load_below_its_requested_rate_says_so() -> None:
    s = steady(range(1, 51), 0.0, 0.02)  # 50/s of the 100/s asked
    stats = summarize(
        s, SHAPE, t0=0.0, started=0.0, stopped=1.0, fault_at=None, recovered_at=None, present=None
    )
    assert stats.achieved_per_s == approx(50.0) and stats.reached is False
    assert "50 operations/s of the 100 requested (50.0%)" in stats.note
    ok = summarize(
        steady(range(1, 101), 0.0, 0.01),
        SHAPE,
        t0=0,
        started=0,
        stopped=1.0,
        fault_at=None,
        recovered_at=None,
        present=frozenset(range(1, 101)),
    )
    assert ok.reached and ok.note == "" and ok.lost_writes == 0 and ok.verified


def test_summary_of_a_crash_with_loss_is_relative_to_the_drill_start() -> None:
    s = steady(range(1, 101), 100.0, 0.01)  # up to the fault at 101.0
    for k in range(5):
        s.add(200 + k, 101.0 + k * 0.1, 101.05 + k * 0.1, ok=False)
    s.add(300, 101.6, 101.61, ok=True)
    s.errors.update({"ConnectionRefused": 5})
    present = frozenset(range(1, 98)) | {300}
    stats = summarize(
        s, SHAPE, t0=90.0, started=100.0, stopped=102.0, fault_at=101.0, recovered_at=101.61, present=present
    )
    assert stats.lost_writes == 3 and stats.lost_seqs == [98, 99, 100]
    assert stats.lost_from_s == approx(10.972) and stats.lost_to_s == approx(10.992)
    assert stats.first_failure_s == approx(11.05) and stats.recovered_s == approx(11.61)
    assert stats.failed_writes == 5 and stats.errors == {"ConnectionRefused": 5}
    assert stats.started_s == approx(10.0) and stats.windows[0].t_s == approx(10.0)
    # it fits the evidence record and survives a JSON round trip
    again = LoadStats.model_validate_json(stats.model_dump_json())
    assert again == stats


def test_old_evidence_without_load_still_loads() -> None:
    fields = EvidenceRecord.model_fields
    assert fields["load"].default is None and fields["service"].default is None
