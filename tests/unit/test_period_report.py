"""The period (compliance evidence) report: what it computes from a ledger, and what it renders."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from firedrill.audit import ledger
from firedrill.audit.controls import CONTROLS, compliance_refs, in_words
from firedrill.audit.signing import Signer, generate_key
from firedrill.drills.base import COMPLIANCE
from firedrill.errors import ConfigError
from firedrill.evidence import EvidenceRecord, ObjectiveVerdict
from firedrill.report.period import (
    FindingsFile,
    PeriodReport,
    build_period_report,
    build_trend_svg,
    load_findings,
    render_html,
    render_markdown,
    write_period_report,
)
from firedrill.report.period.mapping import ASSESSMENTS
from tests.fixtures.evidence_factory import make_failed_record, make_record

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # in 2026-Q4, after its scheduled run
SCHEDULED = [datetime(2026, m, d, 9, 0, tzinfo=UTC) for m, d in ((1, 5), (4, 6), (7, 6), (10, 5))]


def rec(run_id: str, started: str, *, failed: bool = False, **overrides: object) -> EvidenceRecord:
    factory = make_failed_record if failed else make_record
    return factory(run_id=run_id, started_at=started, finished_at=started, **overrides)


def ledger_of(tmp_path: Path, records: list[EvidenceRecord], signer: Signer | None = None) -> Path:
    d = tmp_path / "ledger"
    for r in records:
        ledger.append(d, r, signer)
    return d


YEAR = [
    rec("r1-q1", "2026-01-05T09:00:02Z"),
    rec("r2-q2", "2026-04-06T09:00:02Z", failed=True),
    rec("r3-q4", "2026-10-05T09:00:02Z"),
    rec("r4-q4", "2026-10-06T10:00:00Z"),
]


def build(
    d: Path, start: date = date(2026, 1, 1), end: date = date(2026, 12, 31), **kw: object
) -> PeriodReport:
    kw.setdefault("scheduled_times", SCHEDULED)
    kw.setdefault("generated_at", NOW)
    return build_period_report(d, start, end, ledger.verify(d), **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- findings file

FINDINGS_TOML = """
[[findings]]
id = "F-1"
title = "Promotion slow when the WAL archive lags"
severity = "high"
status = "in progress"
owner = "DBA team"
remediation = "Alert on archive lag"
found = 2026-04-06
due = 2026-06-30
run_ids = ["r2-q2"]

[[findings]]
id = "F-OLD"
title = "Closed before the period"
status = "resolved"
owner = "nobody"
closed = 2025-06-01

[[plan_revisions]]
date = 2026-05-10
description = "Runbook step 4 rewritten"
reference = "RUNBOOK-12 v3"

[[plan_revisions]]
date = 2025-05-10
description = "Outside the period"

[[participants]]
name = "J. Doe"
role = "Incident commander"

[[signoff]]
role = "Head of Platform"
name = "A. Smith"
"""


def test_findings_file_toml_and_json_give_the_same_model(tmp_path: Path) -> None:
    toml = tmp_path / "f.toml"
    toml.write_text(FINDINGS_TOML)
    from_toml = load_findings(toml)
    as_json = tmp_path / "f.json"
    as_json.write_text(json.dumps(from_toml.model_dump(mode="json")))
    assert load_findings(as_json) == from_toml
    assert from_toml.findings[0].due == date(2026, 6, 30)
    assert [p.name for p in from_toml.participants] == ["J. Doe"]


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("bad.toml", '[[findings]]\nid="F"\ntitle="t"\nowner="o"\nstatus="done"\n', "findings.0.status"),
        ("bad.toml", '[[findings]]\nid="F"\ntitle="t"\nstatus="open"\n', "findings.0.owner"),
        ("bad.toml", "[[findings]\n", "not valid TOML"),
        ("bad.json", "{", "not valid JSON"),
        ("bad.json", '{"finding": []}', "finding: Extra inputs are not permitted"),
        ("bad.yaml", "findings: []", "must be .toml or .json"),
    ],
)
def test_bad_findings_file_is_one_line_naming_the_field(
    tmp_path: Path, name: str, text: str, needle: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_findings(path)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert str(path) in str(err.value)


def test_missing_findings_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="findings file not found"):
        load_findings(tmp_path / "nope.toml")


# ------------------------------------------------------------------------------------- model


def test_period_filter_is_inclusive_utc_dates_in_ledger_order(tmp_path: Path) -> None:
    d = ledger_of(
        tmp_path,
        [
            rec("before", "2025-12-31T23:59:59Z"),
            rec("first-day", "2026-01-01T00:00:00Z"),
            rec("offset", "2026-12-31T23:30:00-05:00"),  # 2027-01-01 04:30 UTC: outside
            rec("last-day", "2026-12-31T23:59:59Z"),
        ],
    )
    report = build(d)
    assert [r.record.run_id for r in report.rows] == ["first-day", "last-day"]
    assert [r.seq for r in report.rows] == [2, 4]
    assert report.ledger.records_total == 4


def test_schedule_adherence_calls_out_the_missed_quarter(tmp_path: Path) -> None:
    report = build(ledger_of(tmp_path, YEAR), expected_drills=["postgres_failover"])
    status = {q.label: q.status for q in report.quarters}
    assert status == {"2026-Q1": "ran", "2026-Q2": "ran", "2026-Q3": "missed", "2026-Q4": "ran"}
    assert [q.label for q in report.missed_quarters] == ["2026-Q3"]
    q4 = report.quarters[3]
    assert q4.runs == 2 and q4.scheduled == ["2026-10-05 09:00 UTC (Mon)"]
    assert q4.first_run == "2026-10-05 09:00 UTC" and report.quarters[2].first_run == ""


def test_quarter_status_depends_on_the_clock_and_the_expected_drills(tmp_path: Path) -> None:
    d = ledger_of(tmp_path, YEAR[:1])
    # In 2026-Q2 before its scheduled run: Q2 not yet due, later quarters not yet due either.
    early = build(d, generated_at=datetime(2026, 4, 1, tzinfo=UTC))
    assert [q.status for q in early.quarters] == ["ran", "not yet due", "not yet due", "not yet due"]
    # After Q2's scheduled time with no run: overdue (the quarter is not over yet).
    late = build(d, generated_at=datetime(2026, 4, 6, 10, 0, tzinfo=UTC))
    assert late.quarters[1].status == "overdue"
    # A second expected drill that never ran makes a quarter partial.
    partial = build(d, expected_drills=["postgres_failover", "pitr"])
    assert partial.quarters[0].status == "partial"
    assert partial.quarters[0].drills_missing == ["pitr"]


def test_a_period_cutting_a_quarter_marks_it_partial_in_time(tmp_path: Path) -> None:
    report = build(ledger_of(tmp_path, YEAR), start=date(2026, 2, 15), end=date(2026, 4, 30))
    assert [q.label for q in report.quarters] == ["2026-Q1", "2026-Q2"]
    assert all(q.partial for q in report.quarters)
    assert report.quarters[0].scheduled == []  # 2026-01-05 is before the period
    assert report.quarters[0].status == "missed"  # no run in the covered part


def test_objective_cells_and_group_summary(tmp_path: Path) -> None:
    report = build(ledger_of(tmp_path, YEAR))
    failed = report.rows[1]
    assert failed.record.verdict == "failed"
    assert failed.rto.met is False and failed.rto.mark == "✗"
    assert failed.lost.measured == 3 and failed.lost.met is False
    assert report.rows[0].rto.met is True and report.rows[0].rto.limit_text == "≤ 30 s"
    [group] = report.groups
    assert (group.runs, group.passed) == (4, 3)
    assert group.rto_all_met is False and group.lost_total == 3
    assert report.verdict == "failed"


def test_lost_writes_are_summed_per_scenario_with_the_runs_that_lost_some(tmp_path: Path) -> None:
    [loss] = build(ledger_of(tmp_path, YEAR)).losses
    assert (loss.runs, loss.lost, loss.objective, loss.all_met) == (4, 3, "≤ 0 writes", False)
    assert loss.losses == [(2, "r2-q2", 3, "seq 1948, 1949, 1951")]
    assert loss.acknowledged == sum(r.measurements.acknowledged_writes or 0 for r in YEAR)


def test_other_objectives_and_limits_as_people_state_them(tmp_path: Path) -> None:
    base = rec("pitr-1", "2026-02-02T00:00:00Z", drill="pitr")
    extra = ObjectiveVerdict(objective="backup_age", limit=86400.0, unit="s", measured=12.5, met=True)
    rto = [v.model_copy(update={"limit": 900.0}) if v.objective == "rto" else v for v in base.verdicts]
    report = build(ledger_of(tmp_path, [base.model_copy(update={"verdicts": [*rto, extra]})]))
    [(name, cell)] = report.rows[0].others
    assert (name, cell.text, cell.mark, cell.limit_text) == (
        "backup_age",
        "12.500 s",
        "✓",
        "≤ 86400 s (24 h)",
    )
    assert report.rows[0].rto.limit_text == "≤ 900 s (15 min)"
    html, md = render_html(report), render_markdown(report)
    assert "backup_age 12.500 s" in html and "backup_age 12.500 s ✓ (≤ 86400 s (24 h))" in md


def test_failed_run_without_a_finding_is_an_issue_with_no_owner(tmp_path: Path) -> None:
    d = ledger_of(tmp_path, YEAR)
    bare = build(d)
    [issue] = bare.issues
    assert not issue.from_file and issue.owner == "none assigned" and issue.runs == ["r2-q2"]
    assert "rto" in issue.title and "check failed: every acknowledged write is present" in issue.title

    findings = tmp_path / "f.toml"
    findings.write_text(FINDINGS_TOML)
    owned = build(d, findings=load_findings(findings))
    assert [i.id for i in owned.issues] == ["F-1"]  # covers r2-q2; F-OLD closed before the period
    assert owned.issues[0].owner == "DBA team"
    assert [p.description for p in owned.plan_revisions] == ["Runbook step 4 rewritten"]
    assert [s.role for s in owned.signoff] == ["Head of Platform"]


def test_control_mapping_says_what_is_missing(tmp_path: Path) -> None:
    d = ledger_of(tmp_path, YEAR)
    controls = {c.control: c for c in build(d).controls}
    assert set(controls) == {"A1.3", "A.5.30", "A.8.13", "12.10.2", "164.308(a)(7)(ii)(D)"}
    assert controls["A1.3"].status == "supported"
    assert controls["A.5.30"].status == "partial" and "2026-Q3" in controls["A.5.30"].why
    assert controls["A.8.13"].status == "partial" and "restore-from-backup" in controls["A.8.13"].why
    assert controls["12.10.2"].status == "partial"  # no plan revision recorded
    empty = {
        c.control: c for c in build(ledger_of(tmp_path / "e", [rec("x", "2025-01-01T00:00:00Z")])).controls
    }
    assert all(c.status == "not supported" for c in empty.values())


def test_restore_tests_are_told_by_the_drill_catalogue_not_by_the_name(tmp_path: Path) -> None:
    d = ledger_of(
        tmp_path,
        [
            rec("fo", "2026-01-05T09:00:00Z", drill="failover"),  # catalogue: failover
            rec("gone", "2026-02-05T09:00:00Z", drill="backup_restore_v0"),  # not in the catalogue
        ],
    )
    report = build(d)
    assert [r.category for r in report.rows] == ["failover", None]
    assert not any(r.tests_backups for r in report.rows)
    a813 = {c.control: c for c in report.controls}["A.8.13"]
    assert a813.status == "partial" and "restore-from-backup drills: none" in a813.evidence
    assert report.figures[0].value == "2"  # the unknown drill still counts as a drill run
    assert "backup_restore_v0" in render_html(report) and "backup_restore_v0" in render_markdown(report)

    with_pitr = build(ledger_of(tmp_path / "p", [rec("p1", "2026-03-01T00:00:00Z", drill="pitr")]))
    assert with_pitr.rows[0].category == "restore" and with_pitr.rows[0].tests_backups
    a813 = {c.control: c for c in with_pitr.controls}["A.8.13"]
    assert a813.status == "supported" and "restore-from-backup drills: pitr" in a813.evidence


def test_one_compliance_catalogue_for_drill_records_and_the_period_report(tmp_path: Path) -> None:
    assert compliance_refs() == COMPLIANCE
    assert [(c.framework, c.control, c.how) for c in COMPLIANCE] == [
        (c.framework, c.control, c.evidenced_by) for c in CONTROLS
    ]
    assert set(ASSESSMENTS) == {c.key for c in CONTROLS}
    report = build(ledger_of(tmp_path, YEAR))
    assert [(c.framework, c.control, c.requirement) for c in report.controls] == [
        (c.framework, c.control, c.requirement) for c in CONTROLS
    ]
    words = in_words()
    assert words == (
        "SOC 2 A1.3, ISO/IEC 27001:2022 A.5.30 and A.8.13, PCI DSS 4.0 12.10.2 and HIPAA 164.308(a)(7)(ii)(D)"
    )
    assert f"For {words}." in render_html(report) and f"For {words}." in render_markdown(report)


def test_a_broken_ledger_marks_later_runs_unverified_and_no_control_supported(tmp_path: Path) -> None:
    d = ledger_of(tmp_path, YEAR)
    second = sorted(d.glob("000002-*.json"))[0]
    doc = json.loads(second.read_text())
    doc["measurements"]["rto_s"] = 0.001  # a prettier RTO, stored canonically: the chain catches it
    second.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
    report = build(d)
    assert not report.ledger.ok
    assert report.ledger.first_break is not None and "record 3" in report.ledger.first_break
    assert [r.verified for r in report.rows] == [True, True, False, False]
    assert all(c.status != "supported" for c in report.controls)
    assert report.figures[-1].value == "BROKEN"
    html = render_html(report)
    assert "<small>LEDGER</small>BROKEN" in html and html.count(">unverified</span>") == 2
    assert "record 3 (000003-r3-q4.json): prev_sha256 does not match record 2" in html


def test_an_unreadable_record_is_named_and_the_rest_still_reported(tmp_path: Path) -> None:
    d = ledger_of(tmp_path, YEAR)
    second = sorted(d.glob("000002-*.json"))[0]
    second.write_text("{ not json")
    report = build(d)
    assert not report.ledger.ok and report.ledger.unreadable == [second.name]
    assert report.ledger.records_total == 4
    assert [(r.seq, r.verified) for r in report.rows] == [(1, True), (3, False), (4, False)]
    assert second.name in render_html(report)


def test_signed_ledger_reports_the_key_fingerprint(tmp_path: Path) -> None:
    signer = generate_key(tmp_path / "k.pem")
    d = ledger_of(tmp_path, YEAR, signer)
    result = ledger.verify(d, signer.public_key())
    report = build_period_report(
        d,
        date(2026, 1, 1),
        date(2026, 12, 31),
        result,
        key_fingerprint=signer.fingerprint(),
        public_key_pem=signer.public_key_pem(),
        generated_at=NOW,
    )
    assert report.ledger.signatures_checked and report.ledger.key_verified
    html = render_html(report)
    assert signer.fingerprint() in html
    assert "every record and HEAD carry a valid Ed25519 signature" in html
    assert "PRIVATE" not in html


# ------------------------------------------------------------------------------------- rendering


def test_html_is_self_contained_and_shows_verdicts_and_verification(tmp_path: Path) -> None:
    findings = tmp_path / "f.toml"
    findings.write_text(FINDINGS_TOML)
    report = build(ledger_of(tmp_path, YEAR), findings=load_findings(findings))
    html = render_html(report)
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    assert "<small>OBJECTIVES</small>BREACHED" in html
    assert "<small>LEDGER</small>VERIFIED" in html
    assert "ledger OK: 4 records, chain and HEAD intact" in html
    assert (
        html.count('class="tag verdict ok">passed') == 3 and html.count('class="tag verdict ko">failed') == 1
    )
    assert 'id="missed-quarters"' in html and "2026-Q3 (missed)" in html
    for control in ("A1.3", "A.5.30", "A.8.13", "12.10.2", "164.308(a)(7)(ii)(D)"):
        assert control in html
    assert "Promotion slow when the WAL archive lags" in html and "DBA team" in html
    assert "J. Doe" in html and "Head of Platform" in html
    assert html.count('class="trend-chart"') == 1
    assert report.ledger.head_sha256 is not None and report.ledger.head_sha256 in html


def test_text_from_the_evidence_is_escaped(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script> | pipe"
    d = ledger_of(tmp_path, [rec("evil", "2026-03-01T00:00:00Z", scenario=evil)])
    report = build(d)
    html = render_html(report)
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    md = render_markdown(report)
    assert "<script>" not in md and "\\| pipe" in md


def test_markdown_twin_has_every_section_and_run(tmp_path: Path) -> None:
    report = build(ledger_of(tmp_path, YEAR))
    md = render_markdown(report)
    for heading in (
        "## Scope",
        "## Schedule adherence",
        "## Objectives vs measured",
        "## Lost writes and data checks",
        "## Trends across runs",
        "## Issues found and remediation",
        "## Participants",
        "## Control mapping",
        "## Evidence integrity",
        "## Sign-off",
    ):
        assert heading in md
    for run_id in ("r1-q1", "r2-q2", "r3-q4", "r4-q4"):
        assert run_id in md
    assert "**FAILED**" in md and md.count("**PASSED**") == 3
    assert "> **Not run as scheduled:** 2026-Q3 (missed)." in md
    assert "RTO: 0.307 s ✓ → 72.506 s (1 min 12.5 s) ✗ → 0.307 s ✓ → 0.307 s ✓" in md
    # Every table row has the same number of cells as its header.
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.M):
        rows = [ln for ln in block.splitlines()]
        widths = {len(re.findall(r"(?<!\\)\|", ln)) for ln in rows}
        assert len(widths) == 1, block


def test_rendering_is_deterministic_and_written_atomically(tmp_path: Path) -> None:
    d = ledger_of(tmp_path, YEAR)
    a = write_period_report(build(d), tmp_path / "a")
    b = write_period_report(build(d), tmp_path / "b")
    assert a.html.name == "evidence-report-2026-01-01_2026-12-31.html"
    assert a.html.read_bytes() == b.html.read_bytes() and a.md.read_bytes() == b.md.read_bytes()
    assert not list((tmp_path / "a").glob(".*.tmp"))


def test_an_empty_period_renders_without_runs(tmp_path: Path) -> None:
    d = ledger_of(tmp_path, YEAR)
    report = build(d, start=date(2026, 7, 1), end=date(2026, 9, 30), findings=FindingsFile())
    assert report.rows == [] and report.verdict == "no runs"
    html = render_html(report)
    assert "<small>OBJECTIVES</small>NO RUNS" in html and "No drill ran in the period" in html
    assert "2026-Q3 (missed)" in html


def test_from_after_to_is_refused(tmp_path: Path) -> None:
    d = ledger_of(tmp_path, YEAR)
    with pytest.raises(ConfigError, match="before"):
        build(d, start=date(2026, 2, 1), end=date(2026, 1, 1))


# ------------------------------------------------------------------------------------- charts


def test_trend_svg_is_valid_xml_with_one_point_per_measured_run(tmp_path: Path) -> None:
    report = build(ledger_of(tmp_path, YEAR))
    svg = build_trend_svg(report.rows, title="t <&>")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    circles = root.iter(f"{ns}circle") if root.tag.startswith(ns) else root.iter("circle")
    titles = [c.find("title").text for c in circles]  # type: ignore[union-attr]
    assert len(titles) == 12  # 4 runs x (RTO, RPO window, lost writes)
    assert sum("(NOT met)" in (t or "") for t in titles) == 2  # the failed run: RTO and lost writes
    assert "log scale" in svg and "limit 30 s" in svg
    ticks = re.findall(r'text-anchor="end" fill="#616e7c">([^<]+)</text>', svg)
    assert {"0", "1", "2", "3"} <= set(ticks) and not any("." in t for t in ticks if " " not in t)


def test_a_limit_far_above_the_data_is_stated_not_drawn(tmp_path: Path) -> None:
    report = build(ledger_of(tmp_path, YEAR[:1]))
    svg = build_trend_svg(report.rows, title="one run")
    # RPO window 0.01 s against a 1 s objective: the note gives the factor instead of a flat chart.
    assert re.search(r"limit 1 s: above this chart, \d+ times the worst run", svg)


def test_an_unmeasured_value_is_a_hollow_marker_not_a_zero(tmp_path: Path) -> None:
    record = make_failed_record(run_id="nm", started_at="2026-02-02T00:00:00Z")
    m = record.measurements.model_copy(update={"rto_s": None})
    verdicts = [
        v.model_copy(update={"measured": None, "met": False}) if v.objective == "rto" else v
        for v in record.verdicts
    ]
    record = record.model_copy(update={"measurements": m, "verdicts": verdicts})
    report = build(ledger_of(tmp_path, [record]))
    assert report.rows[0].rto.text == "not measured"
    svg = build_trend_svg(report.rows, title="x")
    assert "run 02-02: not measured" in svg
