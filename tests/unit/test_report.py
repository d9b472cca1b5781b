"""HTML and Markdown drill reports rendered from evidence records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from firedrill.evidence import EventRecord, EvidenceRecord, write_evidence
from firedrill.report.chart import MAX_SAMPLES, build_timeline_svg, downsample
from firedrill.report.formatting import fmt_seconds, md_cell
from firedrill.report.run_report import (
    ReportPaths,
    render_from_evidence,
    render_html,
    render_markdown,
    render_reports,
)
from tests.fixtures.evidence_factory import build_failover_record, make_failed_record, make_record

HTML_SECTIONS = [
    "Objective vs measured",
    "Key figures",
    "Phases",
    "Timeline chart",
    "Data checks",
    "Timeline of events",
    "Probe statistics",
    "Environment",
    "Operator",
    "Sign-off",
    "Compliance mapping",
]
MD_SECTIONS = [s for s in HTML_SECTIONS if s != "Timeline chart"] + ["Outage summary"]
KEY_FIGURES = [
    "RTO",
    "Outage seen by client",
    "Lost writes",
    "RPO window",
    "Acknowledged writes",
    "Recovered node",
]


@pytest.fixture(scope="module")
def record() -> EvidenceRecord:
    return make_record()


@pytest.fixture(scope="module")
def html(record: EvidenceRecord) -> str:
    return render_html(record)


@pytest.fixture(scope="module")
def md(record: EvidenceRecord) -> str:
    return render_markdown(record)


def rto_text(record: EvidenceRecord) -> str:
    assert record.measurements.rto_s is not None
    return f"{record.measurements.rto_s:.3f} s"


def test_render_reports_writes_both_files(tmp_path: Path, record: EvidenceRecord) -> None:
    paths = render_reports(record, tmp_path / "run")
    assert paths == ReportPaths(html=tmp_path / "run" / "report.html", md=tmp_path / "run" / "report.md")
    assert paths.html.read_text(encoding="utf-8") == render_html(record)
    assert paths.md.read_text(encoding="utf-8") == render_markdown(record)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["report.html", "report.md"]


def test_factory_is_a_realistic_passed_failover(record: EvidenceRecord) -> None:
    m = record.measurements
    assert record.verdict == "passed"
    assert 9.5 <= record.duration_s <= 10.5
    assert 400 <= len(record.samples) <= 520
    assert m.rto_s is not None and 0.29 <= m.rto_s <= 0.35
    assert m.outage_s is not None and 0.28 <= m.outage_s <= 0.32
    assert m.lost_writes == 0
    assert {"fault_issued", "promotion_started", "promotion_done", "recovered"} <= {
        e.kind for e in record.timeline
    }
    assert all(v.met for v in record.verdicts)
    assert make_failed_record().verdict == "failed"


def test_html_shows_verdict_rto_and_every_section(html: str, record: EvidenceRecord) -> None:
    assert 'class="badge verdict-passed"' in html
    assert "PASSED" in html
    assert record.run_id in html
    assert record.drill in html and record.scenario in html
    assert rto_text(record) in html
    assert rto_text(record) == "0.307 s"
    for section in HTML_SECTIONS:
        assert f"<h2>{section}</h2>" in html, section
    for label in KEY_FIGURES:
        assert f'<div class="label">{label}</div>' in html, label
    assert "Stale acknowledgements" in html  # present in measurements.extra
    assert record.sha256() in html
    assert record.prev_sha256 is not None and record.prev_sha256 in html
    assert "✓ met" in html and "✗" not in html
    assert 'id="error"' not in html  # no error box on a clean run
    for node in record.environment.nodes:
        assert node.name in html and node.address in html
    for event in record.timeline:
        assert event.wall in html


def test_markdown_has_the_same_content_without_chart(md: str, record: EvidenceRecord) -> None:
    assert "**Verdict: PASSED**" in md
    assert rto_text(record) in md
    for section in MD_SECTIONS:
        assert re.search(rf"^## {re.escape(section)}$", md, re.MULTILINE), section
    for label in KEY_FIGURES:
        assert f"| {label} |" in md, label
    assert "<svg" not in md
    assert "Fault issued at t = 4.000 s" in md
    assert record.sha256() in md
    # every table row has the same number of cells as its header
    for block in re.findall(r"(?:^\|.*\|\n)+", md, re.MULTILINE):
        rows = block.strip().splitlines()
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(widths) == 1, block


def test_failed_variant_shows_failure(tmp_path: Path) -> None:
    record = make_failed_record()
    html = render_html(record)
    md = render_markdown(record)
    assert 'class="badge verdict-failed"' in html and "FAILED" in html
    assert "✗ not met" in html and "✗ not met" in md
    assert "72.506 s (1 min 12.5 s)" in html  # large RTO in minutes too
    assert "1948, 1949, 1951" in html
    assert "showing" in html and "every failure kept" in html  # 7,464 samples were thinned


@pytest.mark.parametrize(
    ("verdict", "badge"),
    [("passed", "PASSED"), ("failed", "FAILED"), ("error", "ERROR"), ("aborted", "ABORTED")],
)
def test_verdict_badges(verdict: str, badge: str) -> None:
    html = render_html(make_record(verdict=verdict))
    assert f'class="badge verdict-{verdict}"' in html
    assert f"<small>VERDICT</small>{badge}" in html


def test_error_box_is_shown_and_escaped() -> None:
    record = make_record(verdict="error", error="TargetError: promote failed\n<b>stderr</b> | details")
    html = render_html(record)
    md = render_markdown(record)
    assert 'id="error"' in html and "<h2>Error</h2>" in html
    assert "&lt;b&gt;stderr&lt;/b&gt;" in html and "<b>stderr</b>" not in html
    assert "## Error" in md and "TargetError: promote failed" in md


def test_malicious_strings_are_escaped() -> None:
    evil = '<script>alert("x")</script>'
    record = make_record(
        drill=f'"><img src=x onerror=alert(1)>{evil}',
        scenario=evil,
        run_id="run|with|pipes",
        timeline=[
            EventRecord(kind="fault_issued", t_s=4.0, wall="2025-03-14T09:30:04Z", detail=evil),
            EventRecord(kind="recovered<x>", t_s=4.3, wall="2025-03-14T09:30:04.3Z", detail="</svg>"),
        ],
    )
    html = render_html(record)
    md = render_markdown(record)
    assert "<script" not in html.lower()
    assert "<img" not in html
    assert "&lt;script&gt;" in html
    assert html.count("</svg>") == 1  # the event detail "</svg>" did not close the chart
    svg = build_timeline_svg(record)
    assert "<script" not in svg and "&lt;script&gt;" in svg and "recovered&lt;x&gt;" in svg
    assert "<script" not in md and "&lt;script&gt;" in md
    assert "run\\|with\\|pipes" in md


def test_rerender_from_evidence_file_is_identical(tmp_path: Path, record: EvidenceRecord) -> None:
    first = render_reports(record, tmp_path / "first")
    evidence = write_evidence(record, tmp_path / "archive")
    again = render_from_evidence(evidence)
    assert again == ReportPaths(html=evidence.parent / "report.html", md=evidence.parent / "report.md")
    assert again.html.read_bytes() == first.html.read_bytes()
    assert again.md.read_bytes() == first.md.read_bytes()


def test_html_is_self_contained(html: str) -> None:
    assert not re.search(r"""(?:src|href|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert "http://" not in html and "https://" not in html
    for forbidden in ("<script", "<link", "<img", "<iframe", "@import", "url("):
        assert forbidden not in html.lower(), forbidden


def test_svg_chart_present(html: str, record: EvidenceRecord) -> None:
    assert html.count("<svg") == 1 and html.count("</svg>") == 1
    svg = build_timeline_svg(record)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg in html
    for label in ("fault issued", "promotion started", "promotion done", "recovered"):
        assert f">{label}</text>" in svg, label
    assert f"RTO {rto_text(record)}" in svg
    assert "Zoom on the outage" in svg  # 0.3 s outage in a 10 s drill gets a zoom panel
    assert "pg-primary" in svg and "pg-replica" in svg


def test_large_record_is_downsampled_and_small() -> None:
    record = build_failover_record(duration_s=1000.0, hz=50.0, fault_at_s=400.0, outage_s=3.0, timeouts=20)
    assert len(record.samples) >= 49_000
    failures = [s for s in record.samples if not s.ok]
    kept = downsample(record.samples)
    assert all(s in kept for s in failures)
    assert len(kept) <= MAX_SAMPLES + len(failures)
    html = render_html(record)
    assert len(html.encode()) < 1_500_000
    assert "every failure kept" in html


def test_minimal_record_renders() -> None:
    record = make_record(
        timeline=[],
        samples=[],
        probe_stats=None,
        signoff=[],
        compliance=[],
        checks=[],
        verdicts=[],
        prev_sha256=None,
        measurements={},
        verdict="aborted",
    )
    html = render_html(record)
    md = render_markdown(record)
    assert "no probe samples recorded" in html
    assert "No probe statistics were recorded." in html
    assert "none (first record of the chain)" in html and "none (first record of the chain)" in md
    assert "Reviewer" in html  # a blank sign-off block is still printed
    assert "ABORTED" in html and "ABORTED" in md


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.213, "0.213 s"),
        (0.0, "0.000 s"),
        (59.9994, "59.999 s"),
        (754.213, "754.213 s (12 min 34.2 s)"),
        (3725.0, "3725.000 s (1 h 02 min 05.0 s)"),
        (None, "not measured"),
    ],
)
def test_fmt_seconds(value: float | None, text: str) -> None:
    assert fmt_seconds(value) == text


def test_md_cell_neutralises_markup() -> None:
    assert md_cell("a|b\nc <x> & d") == "a\\|b c &lt;x&gt; &amp; d"


def test_crowded_event_labels_are_omitted_not_overlapped(record: EvidenceRecord) -> None:
    crowd = [
        EventRecord(kind="restore_phase", t_s=4.0 + i * 0.01, wall="2025-03-14T09:30:04Z", detail=f"step {i}")
        for i in range(12)
    ]
    busy = make_record(timeline=sorted([*record.timeline, *crowd], key=lambda e: e.t_s))
    svg = build_timeline_svg(busy)
    assert "crowded event label(s) omitted" in svg
    for label in ("fault issued", "promotion started", "promotion done", "recovered"):
        assert f">{label}</text>" in svg, label  # key events keep their labels
    assert svg.count("step 11") >= 1  # unlabelled lines keep their tooltip
