"""The period report computed from the ledger and the inputs: `build_period_report`.

Schedule adherence (quarters) and the summary figures are computed here; the per-run sections in
`sections`, the control mapping in `mapping`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from firedrill import __version__
from firedrill.audit.ledger import VerifyResult, read_entries
from firedrill.audit.timestamps import parse_utc
from firedrill.errors import ConfigError
from firedrill.report.formatting import Figure, fmt_number, fmt_seconds
from firedrill.report.period import sections
from firedrill.report.period.findings import FindingsFile, SignOffEntry
from firedrill.report.period.mapping import control_rows
from firedrill.report.period.model import LedgerStatus, PeriodReport, QuarterRow, QuarterStatus
from firedrill.report.period.rows import RunRow, run_row

DEFAULT_SIGNOFF = ("DR programme owner", "Service owner", "Auditor / reviewer")


def build_period_report(
    ledger_dir: Path,
    start: date,
    end: date,
    verification: VerifyResult,
    *,
    findings: FindingsFile | None = None,
    scheduled_times: Sequence[datetime] = (),
    expected_drills: Sequence[str] = (),
    schedule_description: str = "",
    key_fingerprint: str | None = None,
    key_source: str | None = None,
    public_key_pem: str | None = None,
    generated_at: datetime | None = None,
) -> PeriodReport:
    """Everything the templates show, computed from the ledger and the inputs; no rendering here."""
    if end < start:
        raise ConfigError(f"--to {end} is before --from {start}")
    now = (generated_at or datetime.now(UTC)).astimezone(UTC)
    findings = findings or FindingsFile()
    entries, unreadable = read_entries(ledger_dir)
    in_period = [e for e in entries if start <= parse_utc(e.record.started_at).date() <= end]
    checked = verification.records_checked if not verification.ok else math.inf

    rows = [run_row(e, e.seq <= checked) for e in in_period]
    expected = list(expected_drills) or sorted({r.record.drill for r in rows})
    ledger = LedgerStatus(
        directory=str(ledger_dir),
        ok=verification.ok,
        summary=verification.summary(),
        records_total=len(entries) + len(unreadable),
        records_checked=verification.records_checked,
        first_break=verification.first_break.reason if verification.first_break else None,
        head_seq=verification.head_seq,
        head_sha256=verification.head_sha256,
        signatures_checked=verification.signatures_checked,
        key_fingerprint=key_fingerprint,
        key_verified=verification.signatures_checked and key_fingerprint is not None,
        key_source=key_source,
        public_key_pem=public_key_pem,
        unreadable=unreadable,
    )
    report = PeriodReport(
        start=start,
        end=end,
        generated_at=now.strftime("%Y-%m-%d %H:%M UTC"),
        renderer=f"firedrill {__version__}",
        rows=rows,
        quarters=_quarters(rows, start, end, scheduled_times, expected, now),
        groups=sections.group_summaries(rows),
        checks=sections.check_summaries(rows),
        losses=sections.loss_summaries(rows),
        issues=sections.issue_list(rows, findings, start, end),
        plan_revisions=[p for p in findings.plan_revisions if start <= p.date <= end],
        operators=sections.operator_rows(rows),
        participants=list(findings.participants),
        signoff=list(findings.signoff) or [SignOffEntry(role=r) for r in DEFAULT_SIGNOFF],
        controls=[],
        environments=sections.scope_environments(rows),
        drills=sections.scope_drills(rows),
        nodes=sections.scope_nodes(rows),
        ledger=ledger,
        figures=[],
        expected_drills=expected,
        schedule_description=schedule_description,
    )
    return replace(report, controls=control_rows(report), figures=_figures(report))


def _quarter_bounds(year: int, q: int) -> tuple[date, date]:
    first = date(year, 3 * (q - 1) + 1, 1)
    nxt = date(year + 1, 1, 1) if q == 4 else date(year, 3 * q + 1, 1)
    return first, nxt - timedelta(days=1)


def _quarters(
    rows: list[RunRow],
    start: date,
    end: date,
    scheduled_times: Sequence[datetime],
    expected: list[str],
    now: datetime,
) -> list[QuarterRow]:
    out: list[QuarterRow] = []
    year, q = start.year, (start.month - 1) // 3 + 1
    while True:
        q_start, q_end = _quarter_bounds(year, q)
        if q_start > end:
            break
        label = f"{year}-Q{q}"
        lo, hi = max(q_start, start), min(q_end, end)
        fires = sorted(t.astimezone(UTC) for t in scheduled_times if lo <= t.astimezone(UTC).date() <= hi)
        in_q = [r for r in rows if r.quarter == label]
        ran = sorted({r.record.drill for r in in_q})
        missing = [d for d in expected if d not in ran]
        today = now.date()
        due_passed = any(f <= now for f in fires) if fires else hi < today
        status: QuarterStatus
        if in_q and not missing:
            status = "ran"
        elif in_q:
            status = "partial" if (hi < today or due_passed) else "ran"
        elif hi < today:
            status = "missed"
        elif due_passed:
            status = "overdue"
        else:
            status = "not yet due"
        out.append(
            QuarterRow(
                label=label,
                start=q_start,
                end=q_end,
                partial=lo != q_start or hi != q_end,
                scheduled=[f.strftime("%Y-%m-%d %H:%M UTC (%a)") for f in fires],
                runs=len(in_q),
                first_run=in_q[0].started if in_q else "",
                drills_ran=ran,
                drills_missing=missing,
                vias=sorted({r.record.operator.via for r in in_q}),
                status=status,
            )
        )
        year, q = (year + 1, 1) if q == 4 else (year, q + 1)
    return out


def _figures(report: PeriodReport) -> list[Figure]:
    rows = report.rows
    passed = sum(r.record.verdict == "passed" for r in rows)
    breached = len(rows) - passed
    rtos = [r.rto.measured for r in rows if r.rto.measured is not None]
    ran = sum(q.status == "ran" for q in report.quarters)
    missed = report.missed_quarters
    open_issues = [i for i in report.issues if i.status not in ("resolved", "accepted")]
    lost = [int(r.lost.measured) for r in rows if r.lost.measured is not None]
    return [
        Figure(
            "Drill runs",
            str(len(rows)),
            f"{passed} passed, {breached} failed or breached" if rows else "none in the period",
            "bad" if breached or not rows else "good",
        ),
        Figure(
            "Quarters run",
            f"{ran} of {len(report.quarters)}",
            ("not run: " + ", ".join(q.label for q in missed)) if missed else "no quarter missed",
            "bad" if missed else "good",
        ),
        Figure(
            "Worst RTO",
            fmt_seconds(max(rtos)) if rtos else "not measured",
            "fault to first acknowledged write",
            "bad" if any(r.rto.met is False for r in rows) else ("good" if rtos else "neutral"),
        ),
        Figure(
            "Lost writes",
            fmt_number(sum(lost)) if lost else "—",
            "acknowledged writes missing after recovery, all runs",
            "bad"
            if any(r.lost.met is False for r in rows)
            else ("good" if lost and not sum(lost) else "neutral"),
        ),
        Figure(
            "Open issues",
            str(len(open_issues)),
            f"{sum(not i.from_file for i in report.issues)} without a finding or owner",
            "bad" if any(not i.from_file for i in report.issues) else "neutral",
        ),
        Figure(
            "Ledger",
            "VERIFIED" if report.ledger.ok else "BROKEN",
            f"{report.ledger.records_checked} records, "
            + ("signatures checked" if report.ledger.signatures_checked else "signatures not checked"),
            "good" if report.ledger.ok else "bad",
        ),
    ]
