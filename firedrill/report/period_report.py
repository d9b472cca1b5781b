"""The compliance evidence report for a period: every drill in the ledger between two dates.

What an auditor asks for after a year of quarterly drills (SOC 2 A1.3, ISO 27001:2022 A.5.30 and
A.8.13, PCI DSS 4.0 12.10.2, HIPAA 164.308(a)(7)(ii)(D)): scope, schedule adherence, objective vs
measured RTO/RPO per drill, data checks, trends, issues with owners, plan revisions, participants,
sign-off, which evidence supports which control, and why the evidence can be trusted (the ledger's
verification result, its HEAD hash and the signing key's fingerprint).

Inputs, and nothing else: the ledger (records whose `started_at` falls on a UTC date in the period,
both ends included), its verification result, an optional findings file (TOML or JSON, see
`FindingsFile`) and the expected schedule (fire times and drills, computed by the caller from
`firedrill.schedule.service`, so this module needs no APScheduler). Rendering is deterministic for a given
`generated_at`: the HTML (one self-contained file, inline CSS and SVG, no script) and the Markdown.

Findings file (`--findings review.toml`)::

    [[findings]]
    id = "F-2026-03"
    title = "Standby promotion waited for a manual step"
    severity = "medium"              # low | medium | high | critical
    status = "in progress"           # open | in progress | resolved | accepted
    owner = "DBA team (J. Doe)"
    remediation = "Automate promotion in the runbook tooling"
    found = 2026-04-06               # optional dates
    due = 2026-06-30
    run_ids = ["20260406T090012Z-failover-1a2b3c"]   # the drills that showed it (optional)

    [[plan_revisions]]
    date = 2026-05-10
    description = "Runbook step 4: promote with pg_ctl promote, not a trigger file"
    reference = "RUNBOOK-12 v3"

    [[participants]]
    name = "J. Doe"
    role = "Incident commander"

    [[signoff]]
    role = "Head of Platform"
    name = "A. Smith"
"""

from __future__ import annotations

import json
import math
import statistics
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Literal

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firedrill import __version__
from firedrill.audit.ledger import VerifyResult, ledger_files
from firedrill.errors import ConfigError
from firedrill.evidence import EvidenceRecord, ObjectiveVerdict, write_json_atomic
from firedrill.report.run_report import fmt_number, fmt_quantity, fmt_seconds, md_cell
from firedrill.report.templating import TEMPLATES_DIR

HTML_TEMPLATE = "period_report.html.j2"
MD_TEMPLATE = "period_report.md.j2"

DEFAULT_SIGNOFF = ("DR programme owner", "Service owner", "Auditor / reviewer")


# ---------------------------------------------------------------------------------------------- findings


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Finding(_Model):
    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    severity: Literal["low", "medium", "high", "critical"] = "medium"
    status: Literal["open", "in progress", "resolved", "accepted"]
    owner: str = Field(min_length=1)
    remediation: str = ""
    found: date | None = None
    due: date | None = None
    closed: date | None = None
    drill: str | None = None
    run_ids: list[str] = Field(default_factory=list)


class PlanRevision(_Model):
    date: date
    description: str = Field(min_length=1)
    reference: str = ""
    author: str = ""


class Participant(_Model):
    name: str = Field(min_length=1)
    role: str = ""
    organisation: str = ""


class SignOffEntry(_Model):
    role: str = Field(min_length=1)
    name: str = ""


class FindingsFile(_Model):
    findings: list[Finding] = Field(default_factory=list)
    plan_revisions: list[PlanRevision] = Field(default_factory=list)
    participants: list[Participant] = Field(default_factory=list)
    signoff: list[SignOffEntry] = Field(default_factory=list)


def load_findings(path: Path) -> FindingsFile:
    """A findings file, `.toml` or `.json`; ConfigError (one line) names the file and the bad field."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(f"findings file {path} must be .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"findings file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read findings file {path}: {exc}") from exc
    try:
        raw = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"findings file {path} is not valid TOML: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"findings file {path} is not valid JSON: {exc}") from exc
    try:
        return FindingsFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise ConfigError(f"findings file {path}: {where}: {first['msg']}") from exc


# ---------------------------------------------------------------------------------------------- ledger


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    seq: int
    file: str
    record: EvidenceRecord
    sha256: str


def read_ledger(ledger_dir: Path) -> tuple[list[LedgerRecord], list[str]]:
    """Every readable record with its sequence number, and the names of unreadable record files.

    Reads only; the caller verifies the ledger (an unreadable record is also a broken link there).
    """
    records: list[LedgerRecord] = []
    unreadable: list[str] = []
    for path in ledger_files(ledger_dir):
        if path.suffix != ".json":
            continue
        seq = int(path.name.split("-", 1)[0])
        try:
            record = EvidenceRecord.model_validate_json(path.read_bytes())
        except (ValidationError, OSError):
            unreadable.append(path.name)
            continue
        records.append(LedgerRecord(seq, path.name, record, record.sha256()))
    return records, unreadable


def utc_date(stamp: str) -> date:
    return _utc(stamp).date()


def _utc(stamp: str) -> datetime:
    try:
        dt = datetime.fromisoformat(stamp)
    except ValueError as exc:
        raise ConfigError(f"started_at {stamp!r} is not an ISO 8601 time") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


# ---------------------------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    """The ledger's verification result as the report states it."""

    directory: str
    ok: bool
    summary: str  # VerifyResult.summary(): one line
    records_total: int
    records_checked: int
    first_break: str | None
    head_seq: int | None
    head_sha256: str | None
    signatures_checked: bool
    key_fingerprint: str | None  # of the key used to verify, else the one HEAD claims
    key_verified: bool  # the fingerprint is of a key that verified every signature
    key_source: str | None  # where the public key came from ("--public-key FILE", "$VAR", ...)
    public_key_pem: str | None
    unreadable: list[str] = field(default_factory=list)

    @property
    def signing_note(self) -> str:
        if self.signatures_checked and self.ok:
            return "every record and HEAD carry a valid Ed25519 signature by this key"
        if self.signatures_checked:
            return "signatures checked with this key up to the first broken link"
        if self.key_fingerprint:
            return "HEAD names this signing key, but no public key was given: signatures NOT checked"
        return (
            "unsigned ledger: the hash chain detects accidental edits and careless tampering, "
            "not a forger who rewrites the chain and HEAD"
        )


def fmt_limit(value: float, unit: str) -> str:
    """An objective's limit as people state it: '900 s (15 min)', '2 s', '0 writes'."""
    if unit != "s":
        return f"{fmt_number(value)} {unit}".strip()
    text = f"{value:g} s"
    if value >= 3600 and value % 3600 == 0:
        return f"{text} ({value / 3600:g} h)"
    if value >= 60 and value % 60 == 0:
        return f"{text} ({value / 60:g} min)"
    return text


@dataclass(frozen=True, slots=True)
class Cell:
    """One objective of one run: limit, measured value, met."""

    limit: float | None
    measured: float | None
    met: bool | None
    unit: str

    @property
    def text(self) -> str:
        if self.met is None and self.measured is None:
            return "—"
        return fmt_quantity(self.measured, self.unit)

    @property
    def limit_text(self) -> str:
        return "—" if self.limit is None else f"≤ {fmt_limit(self.limit, self.unit)}"

    @property
    def mark(self) -> str:
        return "" if self.met is None else ("✓" if self.met else "✗")

    @property
    def tone(self) -> str:
        return "" if self.met is None else ("ok" if self.met else "ko")


@dataclass(frozen=True, slots=True)
class RunRow:
    seq: int
    record: EvidenceRecord
    sha256: str
    started: str  # "2026-11-25 21:13 UTC"
    quarter: str
    rto: Cell
    rpo: Cell
    lost: Cell
    others: list[tuple[str, Cell]]  # objectives other than rto, rpo and lost_writes (e.g. backup_age)
    checks_passed: int
    checks_total: int
    verified: bool  # before the ledger's first broken link

    @property
    def group(self) -> str:
        return f"{self.record.drill} / {self.record.scenario} / {self.record.environment.name}"


@dataclass(frozen=True, slots=True)
class QuarterRow:
    label: str  # "2026-Q1"
    start: date
    end: date
    partial: bool  # the period covers only part of the quarter
    scheduled: list[str]  # fire times of the schedule in the quarter (and the period)
    runs: int
    first_run: str  # "2026-11-25 21:38 UTC", "" without runs
    drills_ran: list[str]
    drills_missing: list[str]
    vias: list[str]
    status: Literal["ran", "partial", "missed", "overdue", "not yet due"]

    @property
    def tone(self) -> str:
        return {"ran": "ok", "partial": "warn", "missed": "ko", "overdue": "ko"}.get(self.status, "muted")


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """One drill scenario on one environment over the period, with its trend charts."""

    drill: str
    scenario: str
    environment: str
    runs: int
    passed: int
    rto_limit: str
    rto_best: str
    rto_median: str
    rto_worst: str
    rto_all_met: bool | None
    rpo_limit: str
    rpo_worst: str
    rpo_all_met: bool | None
    lost_total: int | None
    lost_all_met: bool | None
    latest_verdict: str
    chart_svg: Markup  # built by build_trend_svg from escaped parts only
    trend_lines: list[str]


@dataclass(frozen=True, slots=True)
class LossSummary:
    """Acknowledged and lost writes of one drill scenario over the period."""

    drill: str
    scenario: str
    environment: str
    runs: int  # runs that counted acknowledged writes
    acknowledged: int
    lost: int
    failed: int
    unacknowledged_present: int
    objective: str  # "≤ 0 writes", or "—" when no lost-writes objective applies
    all_met: bool | None
    losses: list[tuple[int, str, int, str]]  # (ledger seq, run id, lost, "seq 62, 63, ...")


@dataclass(frozen=True, slots=True)
class CheckSummary:
    drill: str
    name: str
    runs: int
    passed: int
    failures: list[tuple[str, str]]  # (run id, detail)


@dataclass(frozen=True, slots=True)
class Issue:
    """A finding from the findings file, or a failed run nobody has recorded a finding for."""

    id: str
    title: str
    severity: str
    status: str
    owner: str
    remediation: str
    due: str
    runs: list[str]
    from_file: bool

    @property
    def tone(self) -> str:
        if not self.from_file:
            return "ko"
        return {"open": "ko", "in progress": "warn", "resolved": "ok", "accepted": "muted"}.get(
            self.status, ""
        )


@dataclass(frozen=True, slots=True)
class OperatorRow:
    user: str
    host: str
    via: str
    runs: int
    first: str
    last: str


@dataclass(frozen=True, slots=True)
class ControlRow:
    framework: str
    control: str
    requirement: str
    evidence: list[str]
    status: Literal["supported", "partial", "not supported"]
    why: str

    @property
    def tone(self) -> str:
        return {"supported": "ok", "partial": "warn"}.get(self.status, "ko")


@dataclass(frozen=True, slots=True)
class ScopeEnv:
    name: str
    kinds: list[str]
    hosts: list[str]
    servers: list[str]  # "postgresql 15.20"
    runs: int


@dataclass(frozen=True, slots=True)
class ScopeNode:
    environment: str
    name: str
    role: str
    version: str
    addresses: str  # "127.0.0.1:43703, ... (3 more)"


@dataclass(frozen=True, slots=True)
class Figure:
    label: str
    value: str
    hint: str
    tone: str = "neutral"


@dataclass(frozen=True, slots=True)
class PeriodReport:
    start: date
    end: date
    generated_at: str
    renderer: str
    rows: list[RunRow]
    quarters: list[QuarterRow]
    groups: list[GroupSummary]
    checks: list[CheckSummary]
    losses: list[LossSummary]
    issues: list[Issue]
    plan_revisions: list[PlanRevision]
    operators: list[OperatorRow]
    participants: list[Participant]
    signoff: list[SignOffEntry]
    controls: list[ControlRow]
    environments: list[ScopeEnv]
    drills: list[tuple[str, list[str]]]  # drill -> scenarios
    nodes: list[ScopeNode]
    ledger: LedgerStatus
    figures: list[Figure]
    expected_drills: list[str]
    schedule_description: str

    @property
    def verdict(self) -> Literal["passed", "failed", "no runs"]:
        if not self.rows:
            return "no runs"
        return "passed" if all(r.record.verdict == "passed" for r in self.rows) else "failed"

    @property
    def missed_quarters(self) -> list[QuarterRow]:
        return [q for q in self.quarters if q.status in ("missed", "overdue", "partial")]


# ---------------------------------------------------------------------------------------------- build


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
    all_records, unreadable = read_ledger(ledger_dir)
    in_period = [lr for lr in all_records if start <= utc_date(lr.record.started_at) <= end]
    checked = verification.records_checked if not verification.ok else math.inf

    rows = [_run_row(lr, lr.seq <= checked) for lr in in_period]
    expected = list(expected_drills) or sorted({r.record.drill for r in rows})
    quarters = _quarters(rows, start, end, scheduled_times, expected, now)
    groups = _groups(rows)
    issues = _issues(rows, findings, start, end)
    ledger = LedgerStatus(
        directory=str(ledger_dir),
        ok=verification.ok,
        summary=verification.summary(),
        records_total=len(all_records) + len(unreadable),
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
    revisions = [p for p in findings.plan_revisions if start <= p.date <= end]
    report = PeriodReport(
        start=start,
        end=end,
        generated_at=now.strftime("%Y-%m-%d %H:%M UTC"),
        renderer=f"firedrill {__version__}",
        rows=rows,
        quarters=quarters,
        groups=groups,
        checks=_checks(rows),
        losses=_losses(rows),
        issues=issues,
        plan_revisions=revisions,
        operators=_operators(rows),
        participants=list(findings.participants),
        signoff=list(findings.signoff) or [SignOffEntry(role=r) for r in DEFAULT_SIGNOFF],
        controls=[],
        environments=_environments(rows),
        drills=_drills(rows),
        nodes=_nodes(rows),
        ledger=ledger,
        figures=[],
        expected_drills=expected,
        schedule_description=schedule_description,
    )
    return replace(report, controls=_controls(report), figures=_figures(report))


_MAIN_OBJECTIVES = ("rto", "rpo", "lost_writes")


def _verdict_for(record: EvidenceRecord, objective: str) -> ObjectiveVerdict | None:
    return next((v for v in record.verdicts if v.objective == objective), None)


def _cell(record: EvidenceRecord, objective: str, measured: float | None, unit: str) -> Cell:
    v = _verdict_for(record, objective)
    if v is None:
        return Cell(limit=None, measured=measured, met=None, unit=unit)
    return Cell(limit=v.limit, measured=v.measured, met=v.met, unit=v.unit)


def _run_row(lr: LedgerRecord, verified: bool) -> RunRow:
    r = lr.record
    m = r.measurements
    started = _utc(r.started_at)
    return RunRow(
        seq=lr.seq,
        record=r,
        sha256=lr.sha256,
        started=started.strftime("%Y-%m-%d %H:%M UTC"),
        quarter=f"{started.year}-Q{(started.month - 1) // 3 + 1}",
        rto=_cell(r, "rto", m.rto_s, "s"),
        rpo=_cell(r, "rpo", m.rpo_window_s, "s"),
        lost=_cell(r, "lost_writes", None if m.lost_writes is None else float(m.lost_writes), "writes"),
        others=[
            (v.objective, Cell(limit=v.limit, measured=v.measured, met=v.met, unit=v.unit))
            for v in r.verdicts
            if v.objective not in _MAIN_OBJECTIVES
        ],
        checks_passed=sum(c.passed for c in r.checks),
        checks_total=len(r.checks),
        verified=verified,
    )


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
        status: Literal["ran", "partial", "missed", "overdue", "not yet due"]
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


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _absent(cells: Iterable[Cell]) -> str:
    """Why a group has no figure: its objective was never measured, or it does not apply."""
    return "not measured" if any(c.limit is not None for c in cells) else "—"


def _all_met(cells: Iterable[Cell]) -> bool | None:
    mets = [c.met for c in cells if c.met is not None]
    return all(mets) if mets else None


def _groups(rows: list[RunRow]) -> list[GroupSummary]:
    by: dict[tuple[str, str, str], list[RunRow]] = {}
    for row in rows:
        r = row.record
        by.setdefault((r.drill, r.scenario, r.environment.name), []).append(row)
    out: list[GroupSummary] = []
    for (drill, scenario, env), grp in by.items():
        rtos = [r.rto.measured for r in grp if r.rto.measured is not None]
        rpos = [r.rpo.measured for r in grp if r.rpo.measured is not None]
        losts = [int(r.lost.measured) for r in grp if r.lost.measured is not None]
        latest = grp[-1]
        out.append(
            GroupSummary(
                drill=drill,
                scenario=scenario,
                environment=env,
                runs=len(grp),
                passed=sum(r.record.verdict == "passed" for r in grp),
                rto_limit=latest.rto.limit_text,
                rto_best=fmt_seconds(min(rtos)) if rtos else _absent(r.rto for r in grp),
                rto_median=fmt_seconds(_median(rtos)) if rtos else _absent(r.rto for r in grp),
                rto_worst=fmt_seconds(max(rtos)) if rtos else _absent(r.rto for r in grp),
                rto_all_met=_all_met(r.rto for r in grp),
                rpo_limit=latest.rpo.limit_text,
                rpo_worst=fmt_seconds(max(rpos)) if rpos else _absent(r.rpo for r in grp),
                rpo_all_met=_all_met(r.rpo for r in grp),
                lost_total=sum(losts) if losts else None,
                lost_all_met=_all_met(r.lost for r in grp),
                latest_verdict=latest.record.verdict,
                chart_svg=Markup(build_trend_svg(grp, title=f"{drill}: {scenario} ({env})")),
                trend_lines=_trend_lines(grp),
            )
        )
    return sorted(out, key=lambda g: (g.drill, g.environment, g.scenario))


def _losses(rows: list[RunRow]) -> list[LossSummary]:
    by: dict[tuple[str, str, str], list[RunRow]] = {}
    for row in rows:
        if row.record.measurements.acknowledged_writes is None:
            continue
        r = row.record
        by.setdefault((r.drill, r.scenario, r.environment.name), []).append(row)
    out = []
    for (drill, scenario, env), grp in sorted(by.items()):
        ms = [r.record.measurements for r in grp]
        losses = []
        for row, m in zip(grp, ms, strict=True):
            if m.lost_writes:
                shown = ", ".join(str(x) for x in m.lost_seqs[:10]) + (" …" if len(m.lost_seqs) > 10 else "")
                losses.append((row.seq, row.record.run_id, m.lost_writes, f"seq {shown}" if shown else ""))
        limits = [r.lost.limit_text for r in grp if r.lost.limit is not None]
        out.append(
            LossSummary(
                drill=drill,
                scenario=scenario,
                environment=env,
                runs=len(grp),
                acknowledged=sum(m.acknowledged_writes or 0 for m in ms),
                lost=sum(m.lost_writes or 0 for m in ms),
                failed=sum(m.failed_writes or 0 for m in ms),
                unacknowledged_present=sum(m.unacknowledged_present or 0 for m in ms),
                objective=limits[-1] if limits else "—",
                all_met=_all_met(r.lost for r in grp),
                losses=losses,
            )
        )
    return out


def _trend_lines(grp: list[RunRow]) -> list[str]:
    """The charts in words (for the Markdown report and screen readers)."""
    lines: list[str] = []
    for label, cells in (
        ("RTO", [r.rto for r in grp]),
        ("RPO window", [r.rpo for r in grp]),
        ("Lost writes", [r.lost for r in grp]),
    ):
        values = [c.text + (f" {c.mark}" if c.mark else "") for c in cells]
        lines.append(f"{label}: " + " → ".join(values))
    return lines


def _checks(rows: list[RunRow]) -> list[CheckSummary]:
    by: dict[tuple[str, str], list[tuple[RunRow, bool, str]]] = {}
    for row in rows:
        for c in row.record.checks:
            by.setdefault((row.record.drill, c.name), []).append((row, c.passed, c.detail))
    return [
        CheckSummary(
            drill=drill,
            name=name,
            runs=len(items),
            passed=sum(ok for _, ok, _ in items),
            failures=[(row.record.run_id, detail) for row, ok, detail in items if not ok],
        )
        for (drill, name), items in sorted(by.items(), key=lambda kv: kv[0][0])
    ]


def _issues(rows: list[RunRow], findings: FindingsFile, start: date, end: date) -> list[Issue]:
    issues: list[Issue] = []
    covered: set[str] = set()
    for f in findings.findings:
        if f.found is not None and f.found > end:
            continue
        if f.closed is not None and f.closed < start:
            continue
        covered.update(f.run_ids)
        issues.append(
            Issue(
                id=f.id,
                title=f.title,
                severity=f.severity,
                status=f.status,
                owner=f.owner,
                remediation=f.remediation,
                due=f.due.isoformat() if f.due else "",
                runs=list(f.run_ids),
                from_file=True,
            )
        )
    for row in rows:
        r = row.record
        failed_checks = [c for c in r.checks if not c.passed]
        # A passed run can still carry findings (failed non-blocking checks): they are issues too.
        if (r.verdict == "passed" and not failed_checks) or r.run_id in covered:
            continue
        what = [
            f"{v.objective} {fmt_quantity(v.measured, v.unit)} (limit {fmt_quantity(v.limit, v.unit)})"
            for v in r.verdicts
            if not v.met
        ] + [f"{'check failed' if c.blocking else 'finding'}: {c.name}" for c in failed_checks]
        if r.error:
            what.insert(0, f"{r.verdict}: {r.error}")
        issues.append(
            Issue(
                id=f"run {row.seq}",
                title=f"{r.drill} / {r.scenario} {r.verdict.upper()}: " + ("; ".join(what) or r.verdict),
                severity="unassessed",
                status="no finding recorded",
                owner="none assigned",
                remediation="",
                due="",
                runs=[r.run_id],
                from_file=False,
            )
        )
    return issues


def _operators(rows: list[RunRow]) -> list[OperatorRow]:
    by: dict[tuple[str, str, str], list[RunRow]] = {}
    for row in rows:
        op = row.record.operator
        by.setdefault((op.user, op.host, op.via), []).append(row)
    return [
        OperatorRow(user, host, via, len(grp), grp[0].started, grp[-1].started)
        for (user, host, via), grp in sorted(by.items())
    ]


def _environments(rows: list[RunRow]) -> list[ScopeEnv]:
    by: dict[str, list[EvidenceRecord]] = {}
    for row in rows:
        by.setdefault(row.record.environment.name, []).append(row.record)
    out = []
    for name, recs in sorted(by.items()):
        servers = sorted({f"{k} {v}" for r in recs for k, v in r.environment.servers.items()})
        out.append(
            ScopeEnv(
                name=name,
                kinds=sorted({r.environment.kind for r in recs}),
                hosts=sorted({r.environment.host for r in recs}),
                servers=servers,
                runs=len(recs),
            )
        )
    return out


def _drills(rows: list[RunRow]) -> list[tuple[str, list[str]]]:
    by: dict[str, list[str]] = {}
    for row in rows:
        scenarios = by.setdefault(row.record.drill, [])
        if row.record.scenario not in scenarios:
            scenarios.append(row.record.scenario)
    return sorted(by.items())


def _nodes(rows: list[RunRow]) -> list[ScopeNode]:
    by: dict[tuple[str, str, str, str], list[str]] = {}
    for row in rows:
        env = row.record.environment
        for n in env.nodes:
            addresses = by.setdefault((env.name, n.name, n.role, n.version), [])
            if n.address not in addresses:
                addresses.append(n.address)
    out = []
    for (env_name, name, role, version), addresses in sorted(by.items()):
        shown = ", ".join(addresses[:3]) + (f" ({len(addresses) - 3} more)" if len(addresses) > 3 else "")
        out.append(ScopeNode(env_name, name, role, version, shown))
    return out


def _controls(report: PeriodReport) -> list[ControlRow]:
    rows = report.rows
    n = len(rows)
    runs = f"{n} drill run{'s' if n != 1 else ''} in the ledger (section Runs)"
    ledger_line = (
        f"ledger verified ({report.ledger.records_checked} records), HEAD {report.ledger.head_sha256[:12]}…"
        if report.ledger.ok and report.ledger.head_sha256
        else "ledger verification FAILED (section Evidence integrity)"
        if not report.ledger.ok
        else "ledger verified (empty)"
    )
    measured = [r for r in rows if r.rto.measured is not None]
    checks = sum(r.checks_total for r in rows)
    ran_q = [q for q in report.quarters if q.status == "ran"]
    missed_q = report.missed_quarters
    backup_drills = sorted(
        {r.record.drill for r in rows if any(k in r.record.drill for k in ("pitr", "restore", "backup"))}
    )
    with_owner = [i for i in report.issues if i.from_file]
    without_owner = [i for i in report.issues if not i.from_file]
    last_test = rows[-1].started if rows else None
    trusted = report.ledger.ok

    def status(ok: bool, partial: bool) -> Literal["supported", "partial", "not supported"]:
        if ok and trusted:
            return "supported"
        return "partial" if (partial or ok) else "not supported"

    out = [
        ControlRow(
            "SOC 2",
            "A1.3",
            "Recovery plan procedures supporting system recovery are tested.",
            [
                runs,
                f"{len(measured)} with measured RTO/RPO against objectives (section Objectives)",
                ledger_line,
            ],
            status(n > 0, False),
            "drills ran and were measured" if n else "no drill ran in the period",
        ),
        ControlRow(
            "ISO/IEC 27001:2022",
            "A.5.30",
            "ICT readiness for business continuity is planned, implemented, maintained and tested.",
            [
                f"schedule adherence: {len(ran_q)} of {len(report.quarters)} quarters ran (section Schedule)",
                "objective vs measured RTO/RPO per drill, with trends (sections Objectives, Trends)",
                ledger_line,
            ],
            status(n > 0 and not missed_q, n > 0),
            "every quarter in the period ran"
            if n and not missed_q
            else f"quarters not (fully) run: {', '.join(q.label for q in missed_q)}"
            if missed_q
            else "no drill ran in the period",
        ),
        ControlRow(
            "ISO/IEC 27001:2022",
            "A.8.13",
            "Backup copies of information are maintained and regularly tested.",
            [
                f"{checks} data checks, lost-write counts per run (section Data checks)",
                f"restore-from-backup drills: {', '.join(backup_drills) if backup_drills else 'none'}",
                ledger_line,
            ],
            status(bool(backup_drills) and n > 0, n > 0),
            "restore from backup drilled"
            if backup_drills
            else "replicas and acknowledged writes were checked, but no restore-from-backup (PITR) drill "
            "ran in the period"
            if n
            else "no drill ran in the period",
        ),
        ControlRow(
            "PCI DSS 4.0",
            "12.10.2",
            "At least once every 12 months the incident response plan, including business recovery "
            "and continuity procedures, is reviewed, updated as needed and tested.",
            [
                f"last recovery test: {last_test}" if last_test else "no recovery test in the period",
                f"{len(report.issues)} issue(s), {len(report.plan_revisions)} plan revision(s) "
                "(sections Issues, Plan revisions)",
                ledger_line,
            ],
            status(n > 0 and bool(report.plan_revisions), n > 0),
            "tested, and plan revisions recorded"
            if n and report.plan_revisions
            else "tested, but no plan review/revision recorded in the findings file"
            if n
            else "no recovery test in the period",
        ),
        ControlRow(
            "HIPAA",
            "164.308(a)(7)(ii)(D)",
            "Procedures for periodic testing and revision of contingency plans (addressable).",
            [
                f"periodic testing: {len(ran_q)} of {len(report.quarters)} quarters ran",
                f"revision: {len(report.plan_revisions)} plan revision(s); {len(with_owner)} finding(s) "
                f"with an owner, {len(without_owner)} failed run(s) without a finding",
                ledger_line,
            ],
            status(n > 0 and not missed_q and not without_owner and bool(report.plan_revisions), n > 0),
            "; ".join(
                why
                for why in (
                    "no drill ran" if not n else "",
                    f"missed quarters: {', '.join(q.label for q in missed_q)}" if missed_q else "",
                    f"{len(without_owner)} failed run(s) have no finding/owner" if without_owner else "",
                    "no plan revision recorded" if not report.plan_revisions else "",
                )
                if why
            )
            or "tested every quarter, issues owned, plan revised",
        ),
    ]
    if not trusted:
        out = [
            ControlRow(
                c.framework,
                c.control,
                c.requirement,
                c.evidence,
                "partial" if c.status == "supported" else c.status,
                c.why + "; the ledger does not verify, so the evidence cannot be relied on as is",
            )
            for c in out
        ]
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


# ---------------------------------------------------------------------------------------------- charts

CHART_W = 330.0
CHART_H = 190.0
PAD_L = 52.0
PAD_R = 12.0
PAD_T = 26.0
PAD_B = 34.0
GOOD = "#1b7f3b"
BAD = "#c62828"
INK = "#1f2933"
MUTED = "#616e7c"
GRID = "#e3e6ea"
LIMIT = "#c2410c"


def _n(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _e(text: str) -> str:
    return escape(text, quote=True)


def _nice_step(raw: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten, at least `raw`."""
    if raw <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * magnitude + 1e-12:
            return factor * magnitude
    return 10.0 * magnitude


def _fmt_axis(value: float, unit: str) -> str:
    if unit == "s":
        if value >= 1 or value == 0:
            return f"{value:g} s"
        return f"{value * 1000:g} ms"
    return f"{value:g}"


def _panel(
    x0: float, title: str, cells: list[Cell], labels: list[str], unit: str, log_scale: bool
) -> list[str]:
    """One small chart: a point per run (green met, red not met, grey no objective), the limit as a
    dashed line when it is on the chart's scale, else a note saying how far above the data it is."""
    parts: list[str] = []
    left, right = x0 + PAD_L, x0 + CHART_W - PAD_R
    top, bottom = PAD_T, CHART_H - PAD_B
    values = [c.measured for c in cells]
    measured = [v for v in values if v is not None]
    limits = [c.limit for c in cells if c.limit is not None]
    limit = limits[-1] if limits else None
    parts.append(
        f'<text x="{_n(x0 + 8)}" y="15" font-size="12.5" font-weight="bold" fill="{INK}">{_e(title)}</text>'
    )
    parts.append(
        f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(right - left)}" height="{_n(bottom - top)}" '
        f'fill="#fbfcfd" stroke="{GRID}"/>'
    )
    data_max = max(measured, default=0.0)
    positive = [v for v in measured if v > 0]
    use_log = log_scale and bool(positive)
    limit_on_scale = limit is not None and (limit <= max(data_max, 1e-9) * 4 or not measured)
    if use_log:
        lo = math.floor(math.log10(min(positive)))
        hi_value = max(positive + ([limit] if limit is not None and limit > 0 else []))
        hi = math.ceil(math.log10(hi_value))
        if hi <= lo:
            hi = lo + 1
        limit_on_scale = limit is not None and limit > 0

        def ymap(v: float) -> float:
            lv = math.log10(max(v, 10.0**lo))
            return bottom - (lv - lo) / (hi - lo) * (bottom - top)

        ticks = [10.0**e for e in range(lo, hi + 1, max(1, math.ceil((hi - lo) / 4)))]
    else:
        top_value = max(data_max, limit if (limit is not None and limit_on_scale) else 0.0)
        raw = top_value * 1.05 if top_value > 0 else 1.0
        step = _nice_step(raw / 4)
        if unit != "s":  # counts: whole-number ticks
            step = max(1.0, math.ceil(step))
        y_max = step * max(1, math.ceil(raw / step - 1e-9))
        ticks = [step * i for i in range(round(y_max / step) + 1)]

        def ymap(v: float) -> float:
            return bottom - (v / y_max) * (bottom - top)

    for t in ticks:
        y = ymap(t)
        parts.append(
            f'<line x1="{_n(left)}" y1="{_n(y)}" x2="{_n(right)}" y2="{_n(y)}" stroke="{GRID}"/>'
            f'<text x="{_n(left - 5)}" y="{_n(y + 3.5)}" font-size="9.5" text-anchor="end" '
            f'fill="{MUTED}">{_e(_fmt_axis(t, unit))}</text>'
        )
    n = len(cells)

    def xmap(i: int) -> float:
        return (left + right) / 2 if n == 1 else left + 14 + i * (right - left - 28) / (n - 1)

    if limit is not None and limit_on_scale:
        y = ymap(limit)
        parts.append(
            f'<line x1="{_n(left)}" y1="{_n(y)}" x2="{_n(right)}" y2="{_n(y)}" stroke="{LIMIT}" '
            f'stroke-width="1.4" stroke-dasharray="5 3"><title>objective: at most '
            f"{_e(fmt_quantity(limit, unit))}</title></line>"
            f'<text x="{_n(right - 3)}" y="{_n(y - 4)}" font-size="9.5" text-anchor="end" fill="{LIMIT}" '
            f'stroke="#fff" stroke-width="3" paint-order="stroke">limit {_e(_fmt_axis(limit, unit))}</text>'
        )
    elif limit is not None:
        ratio = f", {limit / data_max:,.0f} times the worst run" if data_max > 0 else ""
        parts.append(
            f'<text x="{_n(right - 3)}" y="{_n(top + 11)}" font-size="9.5" text-anchor="end" '
            f'fill="{LIMIT}">limit {_e(_fmt_axis(limit, unit))}: above this chart{_e(ratio)}</text>'
        )
    points = [(xmap(i), ymap(v)) for i, v in enumerate(values) if v is not None]
    if len(points) > 1:
        d = "M" + " L".join(f"{_n(x)} {_n(y)}" for x, y in points)
        parts.append(f'<path d="{d}" stroke="{MUTED}" stroke-width="1.2" fill="none"/>')
    for i, (v, c) in enumerate(zip(values, cells, strict=True)):
        x = xmap(i)
        if v is None:
            parts.append(
                f'<circle cx="{_n(x)}" cy="{_n(bottom - 5)}" r="3.6" fill="#fff" stroke="{BAD}" '
                f'stroke-width="1.5"><title>run {_e(labels[i])}: not measured</title></circle>'
            )
            continue
        colour = MUTED if c.met is None else (GOOD if c.met else BAD)
        tip = f"run {labels[i]}: {fmt_quantity(v, unit)}" + (
            "" if c.met is None else (" (met)" if c.met else " (NOT met)")
        )
        parts.append(
            f'<circle cx="{_n(x)}" cy="{_n(ymap(v))}" r="3.6" fill="{colour}" stroke="#fff" stroke-width="1">'
            f"<title>{_e(tip)}</title></circle>"
        )
    step = max(1, math.ceil(n / (6 if max(len(label) for label in labels) <= 5 else 3)))
    for i in range(0, n, step):
        parts.append(
            f'<text x="{_n(xmap(i))}" y="{_n(bottom + 13)}" font-size="9.5" text-anchor="middle" '
            f'fill="{MUTED}">{_e(labels[i])}</text>'
        )
    scale = "log scale" if use_log else "linear"
    parts.append(
        f'<text x="{_n((left + right) / 2)}" y="{_n(bottom + 27)}" font-size="9.5" text-anchor="middle" '
        f'fill="{MUTED}">run date (UTC) · {scale}</text>'
    )
    return parts


def build_trend_svg(rows: Sequence[RunRow], *, title: str) -> str:
    """RTO, RPO window and lost writes of consecutive runs as one inline SVG of three small charts."""
    days = [r.started[5:10] for r in rows]  # MM-DD, or MM-DD HH:MM when a day has several runs
    labels = days if len(set(days)) == len(days) else [r.started[5:16] for r in rows]
    parts: list[str] = []
    parts += _panel(0.0, "RTO", [r.rto for r in rows], labels, "s", log_scale=True)
    parts += _panel(CHART_W, "RPO window", [r.rpo for r in rows], labels, "s", log_scale=False)
    parts += _panel(2 * CHART_W, "Lost writes", [r.lost for r in rows], labels, "writes", log_scale=False)
    width = 3 * CHART_W
    label = f"Trends of {title}: RTO, RPO window and lost writes per run"
    return (
        f'<svg viewBox="0 0 {_n(width)} {_n(CHART_H)}" width="100%" role="img" aria-label="{_e(label)}" '
        f"class=\"trend-chart\" font-family=\"-apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, "
        f'sans-serif"><title>{_e(label)}</title>' + "".join(parts) + "</svg>"
    )


# ---------------------------------------------------------------------------------------------- render


@dataclass(frozen=True, slots=True)
class PeriodReportPaths:
    html: Path
    md: Path


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=lambda name: name is not None and name.endswith(".html.j2"),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(seconds=fmt_seconds, number=fmt_number, quantity=fmt_quantity, md=md_cell)
    return env


def render_html(report: PeriodReport) -> str:
    return _environment().get_template(HTML_TEMPLATE).render(p=report)


def render_markdown(report: PeriodReport) -> str:
    return _environment().get_template(MD_TEMPLATE).render(p=report)


def write_period_report(report: PeriodReport, out_dir: Path) -> PeriodReportPaths:
    """`evidence-report-<from>_<to>.html` and `.md` in `out_dir`, each written atomically."""
    stem = f"evidence-report-{report.start.isoformat()}_{report.end.isoformat()}"
    paths = PeriodReportPaths(html=out_dir / f"{stem}.html", md=out_dir / f"{stem}.md")
    html, md = render_html(report), render_markdown(report)
    try:
        write_json_atomic(paths.html, html)
        write_json_atomic(paths.md, md)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {out_dir}: {exc.strerror}") from exc
    return paths
