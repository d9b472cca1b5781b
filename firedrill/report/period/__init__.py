"""The compliance evidence report for a period: every drill in the ledger between two dates.

What an auditor asks for after a year of quarterly drills (the controls of
`firedrill.audit.controls`: SOC 2 A1.3, ISO 27001:2022 A.5.30 and A.8.13, PCI DSS 4.0 12.10.2,
HIPAA 164.308(a)(7)(ii)(D)): scope, schedule adherence, objective vs measured RTO/RPO per drill, data
checks, trends, issues with owners, plan revisions, participants, sign-off, which evidence supports
which control, and why the evidence can be trusted (the ledger's verification result, its HEAD hash
and the signing key's fingerprint).

Inputs, and nothing else: the ledger (records whose `started_at` falls on a UTC date in the period,
both ends included), its verification result, an optional findings file (`findings`) and the
expected schedule (fire times and drills, computed by the caller from `firedrill.schedule.config`,
so this package needs no APScheduler).

Modules, lowest first: `findings` (the findings file), `rows` (one row per run, read from the
ledger), `model` (what the report shows), `trends` (the SVG charts), `sections` and `mapping` (the
sections computed from the rows, the control mapping), `build` (`build_period_report`) and `render`
(HTML and Markdown).
"""

from __future__ import annotations

from firedrill.report.period.build import build_period_report
from firedrill.report.period.findings import (
    Finding,
    FindingsFile,
    Participant,
    PlanRevision,
    SignOffEntry,
    load_findings,
)
from firedrill.report.period.model import ControlRow, LedgerStatus, PeriodReport
from firedrill.report.period.render import (
    render_html,
    render_markdown,
    write_period_report,
)
from firedrill.report.period.rows import Cell, RunRow
from firedrill.report.period.trends import build_trend_svg

__all__ = [
    "Cell",
    "ControlRow",
    "Finding",
    "FindingsFile",
    "LedgerStatus",
    "Participant",
    "PeriodReport",
    "PlanRevision",
    "RunRow",
    "SignOffEntry",
    "build_period_report",
    "build_trend_svg",
    "load_findings",
    "render_html",
    "render_markdown",
    "write_period_report",
]
