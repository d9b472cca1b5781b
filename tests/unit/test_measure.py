"""Definitions of RTO, outage, phases, loss, PITR and verdicts, checked on synthetic timelines."""

from __future__ import annotations

import math
import random

import pytest

from firedrill.evidence import Objective
from firedrill.measure import OutageResult, check_pitr, judge, measure_loss, measure_outage, probe_stats
from firedrill.timeline import Event, EventKind, Op, Sample

approx = pytest.approx


def w(
    seq: int,
    start: float,
    end: float | None = None,
    *,
    ok: bool = True,
    node: str | None = "a",
    probe: str = "w",
    error: str = "Timeout",
) -> Sample:
    """A write sample; 10 ms long unless told. Failed writes carry an error and no node."""
    return Sample(
        probe=probe,
        seq=seq,
        op=Op.WRITE,
        start=start,
        end=start + 0.01 if end is None else end,
        wall=1_700_000_000.0 + start,
        ok=ok,
        error=None if ok else error,
        node=node if ok else None,
    )


def ev(kind: EventKind, mono: float) -> Event:
    return Event(kind=kind, mono=mono, wall=1_700_000_000.0 + mono)


def acks(first_seq: int, t0: float, n: int, step: float = 0.1, node: str = "a") -> list[Sample]:
    return [w(first_seq + i, t0 + i * step, node=node) for i in range(n)]


FAULT = [ev(EventKind.FAULT_ISSUED, 10.0), ev(EventKind.FAULT_RETURNED, 10.05)]


def kill_and_promote() -> tuple[list[Sample], list[Event]]:
    """Primary a acks until 9.91, fault at 10.0, four 0.5 s failures, replica b acks from 12.0."""
    samples = acks(1, 9.0, 10)  # seqs 1..10, last ends 9.91
    samples += [w(11 + i, 10.0 + i * 0.5, 10.5 + i * 0.5, ok=False) for i in range(4)]  # ends 10.5..12.0
    samples += [w(15, 12.0, 12.02, node="b"), w(16, 12.1, 12.12, node="b")]
    events = [*FAULT, ev(EventKind.PROMOTION_STARTED, 10.6), ev(EventKind.PROMOTION_DONE, 11.8)]
    return samples, events


def assert_phases(result: OutageResult, expected: dict[str, tuple[float, float, float]]) -> None:
    """Phases in order, each (start_s, end_s, duration_s) relative to the fault."""
    assert [p.name for p in result.phases] == list(expected)
    for p in result.phases:
        assert (p.start_s, p.end_s, p.duration_s) == approx(expected[p.name])


# --- outage / RTO ---------------------------------------------------------------------------------


def test_kill_and_promote_rto_outage_and_phases() -> None:
    samples, events = kill_and_promote()
    r = measure_outage(samples, events, recovered_nodes=frozenset({"b"}))
    assert r.fault_at == 10.0
    assert r.recovered and r.recovered_node == "b"
    assert r.rto_s == approx(2.02)
    assert r.first_recovered_at == approx(12.02)
    assert r.first_failure_at == approx(10.5)
    assert r.outage_seen
    assert r.outage_s == approx(12.02 - 9.91)
    assert r.failed_writes == 4
    assert r.stale_acks == 0
    assert r.max_gap_s == approx(12.02 - 9.91)
    assert_phases(
        r,
        {
            "detection": (0.0, 0.5, 0.5),
            "promotion": (0.6, 1.8, 1.2),
            "reconnect": (1.8, 2.02, 0.22),
        },
    )


def test_unsorted_samples_give_the_same_result() -> None:
    samples, events = kill_and_promote()
    shuffled = samples[::-1]
    random.Random(7).shuffle(shuffled)
    nodes = frozenset({"b"})
    assert measure_outage(shuffled, events[::-1], recovered_nodes=nodes) == measure_outage(
        samples, events, recovered_nodes=nodes
    )


def test_freeze_same_node_recovers_via_gap_without_failures() -> None:
    samples = acks(1, 9.0, 10)  # last ack ends 9.91
    samples += [w(11, 9.98, 15.0), w(12, 15.0, 15.01)]  # 11 straddles the fault: not a recovery
    events = [*FAULT, ev(EventKind.FAULT_CLEARED, 14.99)]
    r = measure_outage(samples, events, recovered_nodes=None)
    assert r.recovered and r.recovered_node == "a"
    assert r.rto_s == approx(5.01)
    assert r.failed_writes == 0 and r.first_failure_at is None
    assert r.outage_seen
    assert r.max_gap_s == approx(15.0 - 9.91)
    assert r.outage_s == approx(15.01 - 9.91)
    assert_phases(r, {"reconnect": (4.99, 5.01, 0.02)})


def test_straddling_write_alone_is_not_a_recovery() -> None:
    samples = [*acks(1, 9.0, 10), w(11, 9.98, 15.0)]
    r = measure_outage(samples, FAULT, recovered_nodes=None)
    assert not r.recovered and r.rto_s is None and r.outage_s is None and r.recovered_node is None
    assert r.outage_seen  # 5 s without an ack, even though nothing failed
    assert r.max_gap_s == approx(15.0 - 9.91)


def test_zero_downtime_is_a_result() -> None:
    samples = acks(1, 9.0, 21)  # every 0.1 s from 9.0 to 11.0, no failure
    events = [ev(EventKind.FAULT_ISSUED, 10.05)]
    r = measure_outage(samples, events, recovered_nodes=None)
    assert r.recovered and not r.outage_seen
    assert r.rto_s == approx(10.11 - 10.05)
    assert r.outage_s == 0.0
    assert r.max_gap_s == approx(0.1)
    assert r.failed_writes == 0 and r.phases == ()


@pytest.mark.parametrize(("threshold", "seen"), [(0.25, False), (0.1, True)])
def test_gap_threshold_decides_a_short_silence(threshold: float, seen: bool) -> None:
    samples = [w(1, 9.9, 9.91), w(2, 9.99, 10.11), w(3, 10.11, 10.12)]  # 0.2 s silence across the fault
    r = measure_outage(samples, FAULT, recovered_nodes=None, gap_threshold_s=threshold)
    assert r.max_gap_s == approx(0.2)
    assert r.outage_seen is seen
    assert r.rto_s == approx(0.12)
    assert r.outage_s == (approx(10.12 - 9.91) if seen else 0.0)


def test_never_recovered() -> None:
    samples = acks(1, 9.0, 10) + [w(11 + i, 10.0 + i, 11.0 + i, ok=False) for i in range(10)]
    events = [*FAULT, ev(EventKind.PROMOTION_STARTED, 10.6)]
    r = measure_outage(samples, events, recovered_nodes=frozenset({"b"}))
    assert not r.recovered
    assert r.rto_s is None and r.outage_s is None and r.first_recovered_at is None
    assert r.outage_seen and r.failed_writes == 10
    assert r.max_gap_s == approx(20.0 - 9.91)  # open-ended: up to the last write seen
    assert_phases(r, {"detection": (0.0, 1.0, 1.0)})


def test_stale_ack_from_old_primary_is_not_a_recovery() -> None:
    samples, events = kill_and_promote()
    samples.append(w(99, 10.1, 10.15, node="a"))  # old primary accepted a write after the fault
    r = measure_outage(samples, events, recovered_nodes=frozenset({"b"}))
    assert r.stale_acks == 1
    assert r.recovered_node == "b" and r.rto_s == approx(2.02)
    assert r.outage_s == approx(12.02 - 10.15)  # the client last saw success at 10.15


def test_only_stale_acks_means_not_recovered() -> None:
    samples = acks(1, 9.0, 20)  # a keeps acking from 9.0 to 10.91
    r = measure_outage(samples, FAULT, recovered_nodes=frozenset({"b"}))
    assert not r.recovered and r.stale_acks == 10
    assert not r.outage_seen  # honest: the client never saw an outage, but it was split-brain


def test_write_without_node_is_neither_recovery_nor_stale() -> None:
    samples = [w(1, 9.9), w(2, 10.1, node=None)]
    r = measure_outage(samples, FAULT, recovered_nodes=frozenset({"b"}))
    assert not r.recovered and r.stale_acks == 0


def test_recovery_is_the_earliest_acknowledgement_across_probes() -> None:
    samples, events = kill_and_promote()
    samples += [w(100, 11.9, 12.5, node="b", probe="w2"), w(101, 11.95, 11.97, node="b", probe="w2")]
    r = measure_outage(samples, events, recovered_nodes=frozenset({"b"}))
    assert r.first_recovered_at == approx(11.97) and r.rto_s == approx(1.97)
    assert_phases(
        r, {"detection": (0.0, 0.5, 0.5), "promotion": (0.6, 1.8, 1.2), "reconnect": (1.8, 1.97, 0.17)}
    )


def test_no_samples() -> None:
    r = measure_outage([], FAULT, recovered_nodes=None)
    assert not r.recovered and not r.outage_seen
    assert r.failed_writes == 0 and r.stale_acks == 0 and r.max_gap_s == 0.0 and r.phases == ()


def test_no_fault_event_is_an_error() -> None:
    with pytest.raises(ValueError, match="FAULT_ISSUED"):
        measure_outage(acks(1, 9.0, 3), [ev(EventKind.PROBES_STARTED, 9.0)], recovered_nodes=None)


def test_no_writes_after_the_fault() -> None:
    samples = [*acks(1, 9.0, 10), Sample("r", 1, Op.READ, 10.5, 10.51, 0.0, True, node="a")]
    r = measure_outage(samples, FAULT, recovered_nodes=None)
    assert not r.recovered and r.failed_writes == 0
    assert r.max_gap_s == approx(10.0 - 9.91)  # nothing observed after the fault


def test_all_writes_failed() -> None:
    samples = [w(i, 9.0 + i * 0.5, 9.5 + i * 0.5, ok=False) for i in range(6)]  # ends 9.5..12.0
    r = measure_outage(samples, FAULT, recovered_nodes=None)
    assert not r.recovered and r.outage_seen
    assert r.failed_writes == 5  # the one ending at 9.5 was before the fault
    assert r.first_failure_at == approx(10.0)
    assert r.max_gap_s == approx(2.0)  # from the fault (no ack ever) to the last write seen


def test_fault_at_the_very_first_sample() -> None:
    samples = [w(1, 10.0, 10.3, ok=False), w(2, 10.3, 10.32), w(3, 10.4, 10.41)]
    r = measure_outage(samples, FAULT, recovered_nodes=None)
    assert r.recovered and r.rto_s == approx(0.32)
    assert r.outage_s == approx(0.32)  # no ack before the failure: counted from the fault
    assert r.max_gap_s == approx(0.32)


def test_ack_before_the_first_failure_is_not_a_recovery() -> None:
    """Behind one endpoint, an ack after the fault was issued but before anything failed only shows
    the fault had not taken effect yet; the outage starts at the failure and never ends here."""
    samples = [*acks(1, 9.0, 10), w(11, 10.2, 10.21), w(12, 10.3, 10.8, ok=False)]
    r = measure_outage(samples, FAULT, recovered_nodes=None)
    assert r.failed_writes == 1 and r.outage_seen
    assert not r.recovered and r.rto_s is None
    assert [p.name for p in r.phases] == ["detection"]


def test_random_outages_have_the_constructed_rto() -> None:
    rng = random.Random(20240601)
    for _ in range(200):
        fault = rng.uniform(5.0, 50.0)
        period = rng.uniform(0.01, 0.2)
        dur = rng.uniform(0.001, period / 2)
        outage = rng.uniform(0.5, 30.0)
        fail_dur = rng.uniform(0.05, 0.5)
        samples = [
            w(i, fault - 2.0 + i * period, fault - 2.0 + i * period + dur) for i in range(int(2 / period))
        ]
        n_fail = int(outage / fail_dur)
        samples += [
            w(1000 + i, fault + i * fail_dur, fault + (i + 1) * fail_dur, ok=False) for i in range(n_fail)
        ]
        rec = fault + outage
        samples += [w(5000 + i, rec + i * period, rec + i * period + dur, node="b") for i in range(20)]
        rng.shuffle(samples)
        r = measure_outage(samples, [ev(EventKind.FAULT_ISSUED, fault)], recovered_nodes=frozenset({"b"}))
        assert r.recovered and r.recovered_node == "b" and r.outage_seen
        assert r.rto_s == approx(outage + dur)
        assert r.failed_writes == n_fail


# --- loss / RPO -----------------------------------------------------------------------------------


def ten_acks() -> list[Sample]:
    return [w(i, 10.0 + 0.1 * i) for i in range(1, 11)]  # seq i ends 10.01 + 0.1 * i


def test_exactly_n_lost_writes_with_seqs_and_window() -> None:
    r = measure_loss(ten_acks(), frozenset(range(1, 8)))
    assert (r.acknowledged, r.surviving, r.lost) == (10, 7, 3)
    assert r.lost_seqs == (8, 9, 10)
    assert r.window_s == approx(11.01 - 10.71)
    assert r.unacknowledged_present == 0


def test_nothing_lost() -> None:
    r = measure_loss(ten_acks(), frozenset(range(1, 11)))
    assert r.lost == 0 and r.lost_seqs == () and r.window_s == 0.0


def test_everything_lost_window_starts_at_first_lost_write() -> None:
    r = measure_loss(ten_acks(), frozenset())
    assert r.lost == 10 and r.surviving == 0
    assert r.window_s == approx(11.01 - 10.1)


def test_non_contiguous_loss_window_from_last_survivor_before_last_lost() -> None:
    r = measure_loss(ten_acks(), frozenset({1, 2, 3, 4, 5, 7}))
    assert r.lost_seqs == (6, 8, 9, 10)
    assert r.window_s == approx(11.01 - 10.71)


def test_unacknowledged_but_present() -> None:
    samples = [*ten_acks(), w(11, 11.1, 13.1, ok=False), w(12, 13.1, 15.1, ok=False)]
    r = measure_loss(samples, frozenset({*range(1, 12), 999}))  # 11 committed unseen; 999 never written
    assert r.unacknowledged_present == 1
    assert r.acknowledged == 10 and r.lost == 0


def test_duplicate_seqs_count_once() -> None:
    samples = [*ten_acks(), w(5, 12.0), w(11, 12.1, 12.6, ok=False), w(11, 12.6, 12.61)]
    r = measure_loss(samples, frozenset(range(1, 11)))
    assert r.acknowledged == 11  # 5 acked twice; 11 failed then acked on retry
    assert r.lost_seqs == (11,) and r.unacknowledged_present == 0
    assert r.window_s == approx(12.61 - 11.01)


def test_reads_are_ignored_by_loss() -> None:
    samples = [*ten_acks(), Sample("r", 42, Op.READ, 10.0, 10.01, 0.0, True, node="a")]
    r = measure_loss(samples, frozenset(range(1, 11)))
    assert r.acknowledged == 10 and r.lost == 0


def test_loss_with_no_samples() -> None:
    r = measure_loss([], frozenset({1, 2}))
    assert (r.acknowledged, r.lost, r.window_s, r.unacknowledged_present) == (0, 0, 0.0, 0)


# --- PITR -----------------------------------------------------------------------------------------

COMMITS = [(1, 100.0), (2, 101.0), (3, 102.0), (4, 103.0)]


def test_pitr_inclusive_boundary() -> None:
    c = check_pitr(COMMITS, frozenset({1, 2, 3}), 102.0)
    assert (c.expected, c.present_expected, c.missing, c.unexpected) == (3, 3, (), ())
    assert c.newest_recovered_wall == 102.0 and c.ok


def test_pitr_exclusive_boundary() -> None:
    c = check_pitr(COMMITS, frozenset({1, 2, 3}), 102.0, inclusive=False)
    assert c.expected == 2 and c.unexpected == (3,) and not c.ok
    assert check_pitr(COMMITS, frozenset({1, 2}), 102.0, inclusive=False).ok


def test_pitr_missing_rows() -> None:
    c = check_pitr(COMMITS, frozenset({1, 3}), 102.0)
    assert c.missing == (2,) and c.present_expected == 2 and not c.ok


def test_pitr_nothing_recovered() -> None:
    c = check_pitr(COMMITS, frozenset(), 103.5)
    assert c.missing == (1, 2, 3, 4) and c.newest_recovered_wall is None and not c.ok


# --- verdicts and probe stats ---------------------------------------------------------------------


def test_judge_met_not_met_and_not_measured() -> None:
    objectives = [
        Objective(name="rto", limit=900.0, unit="s", description="recover in 15 min"),
        Objective(name="rpo", limit=0.0, unit="s", description="lose nothing"),
        Objective(name="lost_writes", limit=0.0, unit="writes", description="no acked write lost"),
        Objective(name="backup_age", limit=3600.0, unit="s", description="fresh backup"),
        Objective(name="restore", limit=60.0, unit="s", description="restore fast"),
    ]
    values = {"rto": 12.5, "rpo": 0.0, "lost_writes": 3.0, "restore": math.nan}
    got = {v.objective: (v.measured, v.met, v.note) for v in judge(objectives, values)}
    assert got == {
        "rto": (12.5, True, ""),
        "rpo": (0.0, True, ""),
        "lost_writes": (3.0, False, ""),
        "backup_age": (None, False, "not measured"),
        "restore": (None, False, "not measured"),
    }


def test_probe_stats_rates_errors_and_nodes() -> None:
    writes = [w(i, 0.5 * i, 0.5 * i + 0.5, node="a" if i < 2 else "b") for i in range(4)]  # 4 in 2 s
    writes[3] = w(3, 1.5, 2.0, ok=False, error="ConnectionRefused")
    reads = [Sample("r", i, Op.READ, 0.25 * i, 0.25 * i + 0.25, 0.0, i % 4 != 0, node="a") for i in range(8)]
    stats = probe_stats(writes + reads, target_hz=5.0, op_timeout_s=2.0, connect_timeout_s=1.0)
    assert stats.achieved_hz == approx((2.0 + 4.0) / 2)
    assert (stats.samples, stats.ok, stats.failed) == (12, 9, 3)
    assert stats.errors == {"ConnectionRefused": 1, "unknown": 2}
    assert stats.nodes == {"a": 8, "b": 1}
    assert (stats.target_hz, stats.op_timeout_s, stats.connect_timeout_s) == (5.0, 2.0, 1.0)


def test_probe_stats_empty() -> None:
    stats = probe_stats([], target_hz=5.0, op_timeout_s=2.0, connect_timeout_s=1.0)
    assert stats.achieved_hz == 0.0 and stats.samples == 0 and stats.errors == {} and stats.nodes == {}


def test_ack_between_fault_issue_and_effect_is_not_recovery() -> None:
    """Freeze: one write slips through before SIGSTOP lands; recovery is after the outage."""
    node = "pg-a"
    samples = [
        Sample("w", 1, Op.WRITE, 9.99, 9.995, 0.0, True, None, node),
        Sample("w", 2, Op.WRITE, 10.001, 10.003, 0.0, True, None, node),  # before the stop took effect
        Sample("w", 3, Op.WRITE, 10.013, 10.513, 0.0, False, "ClientTimeout", None),
        Sample("w", 4, Op.WRITE, 10.513, 11.013, 0.0, False, "ClientTimeout", None),
        Sample("w", 5, Op.WRITE, 11.013, 11.020, 0.0, True, None, node),
    ]
    events = [Event(EventKind.FAULT_ISSUED, 10.0, 0.0)]
    result = measure_outage(samples, events, recovered_nodes=frozenset({node}))
    assert result.rto_s == pytest.approx(1.020)
    assert result.recovered_node == node


def test_gap_only_outage_recovers_at_the_write_that_ends_the_silence() -> None:
    """No failure (the client waited instead): the ack closing the silence is the recovery."""
    samples = [
        Sample("w", 1, Op.WRITE, 9.99, 9.995, 0.0, True, None, "n"),
        Sample("w", 2, Op.WRITE, 10.001, 10.002, 0.0, True, None, "n"),
        Sample("w", 3, Op.WRITE, 10.012, 11.5, 0.0, True, None, "n"),  # blocked through the freeze
        Sample("w", 4, Op.WRITE, 11.51, 11.52, 0.0, True, None, "n"),
    ]
    events = [Event(EventKind.FAULT_ISSUED, 10.0, 0.0)]
    result = measure_outage(samples, events, recovered_nodes=None)
    assert result.outage_seen
    assert result.rto_s == pytest.approx(1.5)
