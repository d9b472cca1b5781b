"""Per-resource RTO and loss of a zone drill, on synthetic timelines (no I/O)."""

from __future__ import annotations

import pytest

from firedrill.measure_zones import ResourceProbe, ResourceResult, combine, measure_resources, service_gap
from firedrill.timeline import Event, EventKind, Op, Sample

PG_A, PG_B = "198.18.0.11:5000", "198.18.0.12:5001"
RD_A, RD_B, RD_C = "198.18.0.11:6000", "198.18.0.12:6001", "198.18.0.13:6002"
FAULT_AT = 10.0


def _events(fault_at: float = FAULT_AT) -> list[Event]:
    return [Event(EventKind.FAULT_ISSUED, fault_at, 1000 + fault_at, "zone-lost a")]


def _run(probe: str, spans: list[tuple[float, float, bool, str | None]]) -> list[Sample]:
    """Samples of one probe: (start, end, ok, node) per spec; seqs in order."""
    out: list[Sample] = []
    for seq, (start, end, ok, node) in enumerate(spans, 1):
        out.append(
            Sample(probe, seq, Op.WRITE, start, end, 1000 + start, ok, None if ok else "Timeout", node)
        )
    return out


def _steady(
    probe: str, node: str, t0: float, t1: float, period: float = 0.1
) -> list[tuple[float, float, bool, str | None]]:
    """Acknowledged writes every `period` from t0 (included) to t1 (excluded), 5 ms each."""
    count = round((t1 - t0) / period)
    return [(round(t0 + k * period, 6), round(t0 + k * period + 0.005, 6), True, node) for k in range(count)]


def _probe(resource: str, probe: str, recovered: set[str], present: frozenset[int] | None) -> ResourceProbe:
    return ResourceProbe(resource, probe, "client", frozenset(recovered), present)


def test_each_resource_gets_its_own_rto_and_loss() -> None:
    # postgres: acks on A until the fault, failures for 2 s, then acks on B.
    pg = _steady("pg", PG_A, 9.0, 10.0)
    pg += [(t / 10, t / 10 + 0.5, False, None) for t in range(100, 120, 5)]
    pg += _steady("pg", PG_B, 12.0, 13.0)
    # redis: acks on A, failures for 3 s, acks on C; the last ack before the fault is lost.
    rd = _steady("rd", RD_A, 9.0, 10.0)
    rd += [(t / 10, t / 10 + 0.5, False, None) for t in range(100, 130, 5)]
    rd += _steady("rd", RD_C, 13.0, 14.0)
    samples = _run("pg", pg) + _run("rd", rd)
    rd_acked = {s.seq for s in _run("rd", rd) if s.ok}
    results = measure_resources(
        samples,
        _events(),
        [
            _probe("postgres", "pg", {PG_B}, frozenset(s.seq for s in _run("pg", pg) if s.ok)),
            _probe("redis", "rd", {RD_B, RD_C}, frozenset(rd_acked - {10})),
        ],
    )
    pg_r, rd_r = results
    assert pg_r.status == "recovered" and rd_r.status == "recovered"
    assert pg_r.rto_s == pytest.approx(2.005)
    assert pg_r.recovered_node == PG_B
    assert pg_r.lost == 0 and pg_r.lost_seqs == ()
    assert rd_r.rto_s == pytest.approx(3.005)
    assert rd_r.recovered_node == RD_C
    assert rd_r.lost == 1 and rd_r.lost_seqs == (10,)
    assert rd_r.stale_lost_seqs == ()  # acknowledged before the fault: an async-replication loss
    summary = combine(results)
    assert summary.rto_s == pytest.approx(3.005)
    assert summary.lost_writes == 1
    assert summary.rpo_s == rd_r.window_s


def test_a_resource_that_never_went_down() -> None:
    # Its node is not in the lost zone: every write is acknowledged on it, before and after.
    rd = _steady("rd", RD_B, 9.0, 12.0)
    samples = _run("rd", rd)
    [result] = measure_resources(
        samples, _events(), [_probe("redis", "rd", {RD_B, RD_C}, frozenset(s.seq for s in samples))]
    )
    assert result.status == "no outage"
    assert not result.outage_seen
    assert result.outage_s == 0.0
    assert result.failed_writes == 0
    assert result.rto_s is not None and result.rto_s < 0.11  # the first ack after the fault
    assert result.lost == 0


def test_a_resource_that_never_recovered() -> None:
    pg = _steady("pg", PG_A, 9.0, 10.0) + [(t / 10, t / 10 + 0.5, False, None) for t in range(100, 200, 5)]
    samples = _run("pg", pg)
    [result] = measure_resources(samples, _events(), [_probe("postgres", "pg", {PG_B}, None)])
    assert result.status == "not recovered"
    assert result.rto_s is None and result.outage_s is None and result.recovered_node is None
    assert result.failed_writes == 20
    assert result.lost is None and not result.verified  # never read back: not measured, not zero
    summary = combine([result])
    assert summary.rto_s is None and summary.lost_writes is None


def test_a_resource_with_no_samples_is_not_measured() -> None:
    [result] = measure_resources([], _events(), [_probe("redis", "rd", {RD_B}, frozenset())])
    assert result.status == "not measured"
    assert result.rto_s is None
    assert combine([result]).rto_s is None


def test_split_brain_writes_of_the_old_master_are_counted_exactly() -> None:
    # Clients in zone a keep writing to the old master A through the partition (acked, stale),
    # then A is demoted (failures), then they reach the new master B.
    rd = _steady("rd@a", RD_A, 9.0, 16.0)  # 70 acks on A: seqs 1..10 before, 11..70 after the fault
    rd += [(t / 10, t / 10 + 0.05, False, None) for t in range(160, 165)]
    rd += _steady("rd@a", RD_B, 16.5, 17.5)
    samples = _run("rd@a", rd)
    acked = {s.seq for s in samples if s.ok}
    stale = {s.seq for s in samples if s.ok and s.node == RD_A and s.start >= FAULT_AT}
    present = frozenset(acked - stale)  # the new master never saw what A took after the cut
    [result] = measure_resources(samples, _events(), [_probe("redis", "rd@a", {RD_B, RD_C}, present)])
    assert result.stale_acks == len(stale) == 60
    assert result.lost_seqs == tuple(sorted(stale))
    assert result.stale_lost_seqs == result.lost_seqs  # every lost write is a split-brain write
    assert result.split_brain_exact
    assert result.status == "recovered"
    assert result.recovered_node == RD_B
    assert result.rto_s == pytest.approx(6.505)


def test_samples_of_other_probes_do_not_leak_into_a_row() -> None:
    pg = _run("pg", _steady("pg", PG_B, 9.0, 12.0))
    rd = _run("rd", [(10.0, 10.5, False, None), (10.5, 11.0, False, None), (11.0, 11.01, True, RD_B)])
    [pg_r, rd_r] = measure_resources(
        pg + rd,
        _events(),
        [
            _probe("postgres", "pg", {PG_B}, frozenset(range(1, 31))),
            _probe("redis", "rd", {RD_B}, frozenset()),
        ],
    )
    assert pg_r.status == "no outage" and pg_r.failed_writes == 0
    assert rd_r.failed_writes == 2 and rd_r.lost == 1


def test_measuring_needs_a_fault_event() -> None:
    with pytest.raises(ValueError, match="FAULT_ISSUED"):
        measure_resources([], [], [])


SVC = "198.18.0.12:5001+198.18.0.13:6002"


def _timeouts(t0: float, t1: float) -> list[tuple[float, float, bool, str | None]]:
    """Writes timing out after 0.5 s, back to back from t0 to t1."""
    return [(t0 + k * 0.5, t0 + (k + 1) * 0.5, False, None) for k in range(round((t1 - t0) / 0.5))]


def _service_rows(service_back: float) -> tuple[list[Sample], list[ResourceResult]]:
    """PostgreSQL back at 12.0, Redis at 13.0; the service behind both fails until `service_back`
    (PoolTimeout until 13.0, then Timeout), then acknowledges through the new nodes."""
    pg = [*_steady("pg", PG_A, 9.0, 10.0), *_timeouts(10.0, 12.0), *_steady("pg", PG_B, 12.0, 14.0)]
    rd = [*_steady("rd", RD_A, 9.0, 10.0), *_timeouts(10.0, 13.0), *_steady("rd", RD_C, 13.0, 14.0)]
    svc = _run("svc", _steady("svc", RD_A, 9.0, 10.0))
    t, seq = 10.0, len(svc)
    while t < service_back - 1e-9:
        seq += 1
        error = "HTTP503:PoolTimeout" if t < 13.0 else "ClientTimeout"
        svc.append(Sample("svc", seq, Op.WRITE, t, t + 0.25, 1000 + t, False, error, None))
        t = round(t + 0.25, 6)
    for k in range(10):
        seq += 1
        start = service_back + k * 0.1
        svc.append(Sample("svc", seq, Op.WRITE, start, start + 0.005, 1000 + start, True, None, SVC))
    samples = _run("pg", pg) + _run("rd", rd) + svc
    rows = measure_resources(
        samples,
        _events(),
        [
            _probe("postgres", "pg", {PG_B}, None),
            _probe("redis", "rd", {RD_B, RD_C}, None),
            ResourceProbe("service", "svc", "client", None, None),  # any node behind it counts
        ],
    )
    return samples, rows


def test_a_service_is_set_against_the_slowest_store_behind_it() -> None:
    samples, [pg, rd, svc] = _service_rows(service_back=14.0)
    assert (pg.rto_s, rd.rto_s, svc.rto_s) == pytest.approx((2.005, 3.005, 4.005))  # to each first ack's end
    gap = service_gap(samples, _events(), svc, [pg, rd])
    assert gap.behind == ("pg", "rd")
    assert gap.store_rto_s == pytest.approx(3.005)  # Redis, the slower of the two
    assert gap.gap_s == pytest.approx(1.0) and gap.ordered
    # Only what the service answered after its stores were back: not the PoolTimeouts before 13.0.
    assert gap.errors == {"ClientTimeout": 4}


def test_a_service_back_while_its_store_still_fails_is_not_ordered() -> None:
    samples, [pg, rd, svc] = _service_rows(service_back=12.0)
    assert (pg.rto_floor_s, rd.rto_floor_s) == pytest.approx((1.5, 2.5))  # their last failed writes
    gap = service_gap(samples, _events(), svc, [pg, rd])
    assert gap.store_floor_s == pytest.approx(2.5) and gap.gap_s == pytest.approx(-1.0)
    assert gap.ordered is False  # acknowledged at 12.005, while Redis's own write from 12.5 failed
    assert gap.errors == {}


def test_a_service_back_within_the_stores_probe_resolution_is_ordered() -> None:
    """Redis's last failed write started at 12.5 and its probe's first ack ended at 13.005: Redis came
    back in between. The service's client found it back at 12.605, before the canary did."""
    samples, [pg, rd, svc] = _service_rows(service_back=12.6)
    gap = service_gap(samples, _events(), svc, [pg, rd])
    assert gap.gap_s == pytest.approx(-0.4) and gap.ordered is True


def test_with_no_failed_write_the_floor_is_the_rto() -> None:
    pg = _run("pg", [*_steady("pg", PG_A, 9.0, 10.0), *_steady("pg", PG_B, 10.5, 11.0)])
    [row] = measure_resources(pg, _events(), [_probe("postgres", "pg", {PG_B}, None)])
    assert row.rto_s is not None and row.rto_floor_s == row.rto_s


def test_a_service_behind_an_unmeasured_store_has_no_gap() -> None:
    samples, [pg, _, svc] = _service_rows(service_back=14.0)
    [never] = measure_resources([], _events(), [_probe("redis", "rd", {RD_B}, None)])
    gap = service_gap(samples, _events(), svc, [pg, never])
    assert gap.store_rto_s is None and gap.gap_s is None and gap.ordered is None
