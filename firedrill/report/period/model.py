"""What the period report shows, section by section: plain data, computed by `build`, rendered by
`render`. Nothing here reads a file or formats a template."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from markupsafe import Markup

from firedrill.audit.controls import in_words
from firedrill.report.formatting import Figure
from firedrill.report.period.findings import Participant, PlanRevision, SignOffEntry
from firedrill.report.period.rows import RunRow

ControlStatus = Literal["supported", "partial", "not supported"]
QuarterStatus = Literal["ran", "partial", "missed", "overdue", "not yet due"]


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
    status: QuarterStatus

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
    status: ControlStatus
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

    @property
    def controls_in_words(self) -> str:
        """The controls the report is for, as its introduction names them."""
        return in_words()
