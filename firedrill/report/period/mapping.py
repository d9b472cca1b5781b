"""The control mapping of the period report: each control of the compliance catalogue
(`firedrill.audit.controls`), the evidence of the period that supports it and its status.

The status is computed from the evidence ("partial" says what is missing); no control is
"supported" when the ledger does not verify.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from firedrill.audit.controls import (
    CONTROLS,
    HIPAA_164_308_A7_II_D,
    ISO27001_A5_30,
    ISO27001_A8_13,
    PCI_DSS_12_10_2,
    SOC2_A1_3,
)
from firedrill.report.period.model import ControlRow, ControlStatus, PeriodReport, QuarterRow

Assessment = tuple[list[str], ControlStatus, str]  # evidence lines, status, why


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the assessments read from the report, computed once."""

    report: PeriodReport
    n: int  # runs in the period
    runs_line: str
    ledger_line: str
    ran_q: list[QuarterRow]
    missed_q: list[QuarterRow]
    backup_drills: list[str]  # drills of the period that test backups (by catalogue category)
    with_owner: int
    without_owner: int

    def status(self, ok: bool, partial: bool) -> ControlStatus:
        if ok and self.report.ledger.ok:
            return "supported"
        return "partial" if (partial or ok) else "not supported"


def _facts(report: PeriodReport) -> _Facts:
    n = len(report.rows)
    ledger = report.ledger
    ledger_line = (
        f"ledger verified ({ledger.records_checked} records), HEAD {ledger.head_sha256[:12]}…"
        if ledger.ok and ledger.head_sha256
        else "ledger verification FAILED (section Evidence integrity)"
        if not ledger.ok
        else "ledger verified (empty)"
    )
    return _Facts(
        report=report,
        n=n,
        runs_line=f"{n} drill run{'s' if n != 1 else ''} in the ledger (section Runs)",
        ledger_line=ledger_line,
        ran_q=[q for q in report.quarters if q.status == "ran"],
        missed_q=report.missed_quarters,
        backup_drills=sorted({r.record.drill for r in report.rows if r.tests_backups}),
        with_owner=sum(i.from_file for i in report.issues),
        without_owner=sum(not i.from_file for i in report.issues),
    )


def _soc2_a1_3(f: _Facts) -> Assessment:
    measured = sum(r.rto.measured is not None for r in f.report.rows)
    return (
        [
            f.runs_line,
            f"{measured} with measured RTO/RPO against objectives (section Objectives)",
            f.ledger_line,
        ],
        f.status(f.n > 0, False),
        "drills ran and were measured" if f.n else "no drill ran in the period",
    )


def _iso_a5_30(f: _Facts) -> Assessment:
    quarters = len(f.report.quarters)
    return (
        [
            f"schedule adherence: {len(f.ran_q)} of {quarters} quarters ran (section Schedule)",
            "objective vs measured RTO/RPO per drill, with trends (sections Objectives, Trends)",
            f.ledger_line,
        ],
        f.status(f.n > 0 and not f.missed_q, f.n > 0),
        "every quarter in the period ran"
        if f.n and not f.missed_q
        else f"quarters not (fully) run: {', '.join(q.label for q in f.missed_q)}"
        if f.missed_q
        else "no drill ran in the period",
    )


def _iso_a8_13(f: _Facts) -> Assessment:
    checks = sum(r.checks_total for r in f.report.rows)
    drills = ", ".join(f.backup_drills) if f.backup_drills else "none"
    return (
        [
            f"{checks} data checks, lost-write counts per run (section Data checks)",
            f"restore-from-backup drills: {drills}",
            f.ledger_line,
        ],
        f.status(bool(f.backup_drills) and f.n > 0, f.n > 0),
        "restore from backup drilled"
        if f.backup_drills
        else "replicas and acknowledged writes were checked, but no restore-from-backup (PITR) drill "
        "ran in the period"
        if f.n
        else "no drill ran in the period",
    )


def _pci_12_10_2(f: _Facts) -> Assessment:
    report = f.report
    last_test = report.rows[-1].started if report.rows else None
    return (
        [
            f"last recovery test: {last_test}" if last_test else "no recovery test in the period",
            f"{len(report.issues)} issue(s), {len(report.plan_revisions)} plan revision(s) "
            "(sections Issues, Plan revisions)",
            f.ledger_line,
        ],
        f.status(f.n > 0 and bool(report.plan_revisions), f.n > 0),
        "tested, and plan revisions recorded"
        if f.n and report.plan_revisions
        else "tested, but no plan review/revision recorded in the findings file"
        if f.n
        else "no recovery test in the period",
    )


def _hipaa_testing(f: _Facts) -> Assessment:
    report = f.report
    revised = bool(report.plan_revisions)
    whys = (
        "no drill ran" if not f.n else "",
        f"missed quarters: {', '.join(q.label for q in f.missed_q)}" if f.missed_q else "",
        f"{f.without_owner} failed run(s) have no finding/owner" if f.without_owner else "",
        "no plan revision recorded" if not revised else "",
    )
    return (
        [
            f"periodic testing: {len(f.ran_q)} of {len(report.quarters)} quarters ran",
            f"revision: {len(report.plan_revisions)} plan revision(s); {f.with_owner} finding(s) "
            f"with an owner, {f.without_owner} failed run(s) without a finding",
            f.ledger_line,
        ],
        f.status(f.n > 0 and not f.missed_q and not f.without_owner and revised, f.n > 0),
        "; ".join(why for why in whys if why) or "tested every quarter, issues owned, plan revised",
    )


def _not_assessed(f: _Facts) -> Assessment:
    """A control added to the catalogue that this report does not assess yet: say so."""
    return (
        [f.runs_line, f.ledger_line],
        "partial" if f.n else "not supported",
        "not assessed by the period report: review the runs against this control by hand",
    )


ASSESSMENTS: dict[tuple[str, str], Callable[[_Facts], Assessment]] = {
    SOC2_A1_3.key: _soc2_a1_3,
    ISO27001_A5_30.key: _iso_a5_30,
    ISO27001_A8_13.key: _iso_a8_13,
    PCI_DSS_12_10_2.key: _pci_12_10_2,
    HIPAA_164_308_A7_II_D.key: _hipaa_testing,
}


def control_rows(report: PeriodReport) -> list[ControlRow]:
    """One row per control of the catalogue, in catalogue order."""
    facts = _facts(report)
    out: list[ControlRow] = []
    for control in CONTROLS:
        evidence, status, why = ASSESSMENTS.get(control.key, _not_assessed)(facts)
        if not report.ledger.ok:
            status = "partial" if status == "supported" else status
            why += "; the ledger does not verify, so the evidence cannot be relied on as is"
        out.append(ControlRow(control.framework, control.control, control.requirement, evidence, status, why))
    return out
