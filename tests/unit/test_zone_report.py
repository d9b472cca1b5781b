"""The zones section of the reports: a service lane beside the stores' lanes (no servers)."""

from __future__ import annotations

from firedrill.evidence import EvidenceRecord, SampleRecord
from firedrill.evidence_zones import ResourceRecord, ZoneEvidence, ZoneFaultRecord
from firedrill.report.run_report import render_html, render_markdown
from firedrill.report.zone_chart import build_zone_lanes_svg
from tests.fixtures.evidence_factory import make_record


def _samples(probe: str, back_s: float) -> list[SampleRecord]:
    """Acknowledged every 0.1 s from 1 s, failing from the fault at 2 s until `back_s`."""
    out, t, seq = [], 1.0, 0
    while t < back_s + 0.5:
        seq += 1
        ok = t < 2.0 or t >= back_s
        out.append(SampleRecord(probe=probe, seq=seq, op="write", t_s=round(t, 3), dur_ms=2.0, ok=ok))
        t += 0.1
    return out


def _record() -> EvidenceRecord:
    def row(resource: str, rto: float, **extra: object) -> ResourceRecord:
        return ResourceRecord(
            resource=resource,
            probe=f"{resource}@client",
            client_zone="client",
            status="recovered",
            rto_s=rto,
            outage_seen=True,
            outage_s=rto,
            verified=True,
            lost_writes=0,
            **extra,
        )

    zones = ZoneEvidence(
        mechanism="namespaces",
        zones=["a", "b", "c", "client"],
        faults=[ZoneFaultRecord(kind="zone-lost", zone="a", issued_s=2.0, returned_s=2.003, healed_s=6.0)],
        resources=[
            row("postgres", 0.5),
            row("redis", 3.25),
            row(
                "service",
                4.05,
                behind=["postgres@client", "redis@client"],
                store_rto_s=3.25,
                gap_s=0.8,
                gap_phase="application stalled",
            ),
        ],
    )
    samples = (
        _samples("postgres@client", 2.5) + _samples("redis@client", 5.25) + _samples("service@client", 6.05)
    )
    return make_record().model_copy(update={"zones": zones, "samples": samples})


def test_the_service_lane_marks_its_stores_and_says_how_much_later_it_was_back() -> None:
    svg = build_zone_lanes_svg(_record())
    assert svg.count('stroke-dasharray="3 2"') == 2  # on the service lane, and in the legend
    assert "RTO 4.050 s (+0.800 s after the stores)" in svg
    assert "RTO 3.250 s<" in svg and "stores back" in svg


def test_both_reports_name_the_stores_behind_the_service_and_the_phase() -> None:
    html, md = render_html(_record()), render_markdown(_record())
    assert "the slowest of them was back after 3.250 s" in html and "+0.800 s after it" in html
    assert "in between: application stalled" in html
    assert (
        "service (service@client) in front of postgres@client, redis@client: the slowest of them was back "
        "after 3.250 s, the service +0.800 s after it; in between: application stalled." in md
    )


def test_stores_without_a_service_get_no_service_marks() -> None:
    record = _record()
    assert record.zones is not None
    stores = record.zones.model_copy(update={"resources": record.zones.resources[:2]})
    svg = build_zone_lanes_svg(record.model_copy(update={"zones": stores}))
    assert "stroke-dasharray" not in svg and "after the stores" not in svg
