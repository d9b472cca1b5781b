"""One row per drill run of the period: the ledger record, its objective cells and its category."""

from __future__ import annotations

from dataclasses import dataclass

from firedrill.audit.ledger import LedgerEntry
from firedrill.audit.timestamps import parse_utc
from firedrill.catalogue import Category, catalogue
from firedrill.evidence import EvidenceRecord, ObjectiveVerdict
from firedrill.report.formatting import fmt_limit, fmt_quantity

MAIN_OBJECTIVES = ("rto", "rpo", "lost_writes")

# What counts as a test of backups (ISO/IEC 27001:2022 A.8.13): a restore from backup (PITR) or a
# backup brought back.
BACKUP_TEST_CATEGORIES: frozenset[Category] = frozenset({"restore", "backup"})


def drill_category(drill: str) -> Category | None:
    """The drill's category in the catalogue; None for a drill no longer registered (an old ledger):
    it still counts as a drill run, but as no particular kind of test."""
    spec = catalogue().get(drill)
    return spec.category if spec is not None else None


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
    category: Category | None  # None: the drill is not in the catalogue (any more)

    @property
    def group(self) -> str:
        return f"{self.record.drill} / {self.record.scenario} / {self.record.environment.name}"

    @property
    def tests_backups(self) -> bool:
        return self.category in BACKUP_TEST_CATEGORIES


def _verdict_for(record: EvidenceRecord, objective: str) -> ObjectiveVerdict | None:
    return next((v for v in record.verdicts if v.objective == objective), None)


def _cell(record: EvidenceRecord, objective: str, measured: float | None, unit: str) -> Cell:
    v = _verdict_for(record, objective)
    if v is None:
        return Cell(limit=None, measured=measured, met=None, unit=unit)
    return Cell(limit=v.limit, measured=v.measured, met=v.met, unit=v.unit)


def run_row(entry: LedgerEntry, verified: bool) -> RunRow:
    r = entry.record
    m = r.measurements
    started = parse_utc(r.started_at)
    return RunRow(
        seq=entry.seq,
        record=r,
        sha256=entry.sha256,
        started=started.strftime("%Y-%m-%d %H:%M UTC"),
        quarter=f"{started.year}-Q{(started.month - 1) // 3 + 1}",
        rto=_cell(r, "rto", m.rto_s, "s"),
        rpo=_cell(r, "rpo", m.rpo_window_s, "s"),
        lost=_cell(r, "lost_writes", None if m.lost_writes is None else float(m.lost_writes), "writes"),
        others=[
            (v.objective, Cell(limit=v.limit, measured=v.measured, met=v.met, unit=v.unit))
            for v in r.verdicts
            if v.objective not in MAIN_OBJECTIVES
        ],
        checks_passed=sum(c.passed for c in r.checks),
        checks_total=len(r.checks),
        verified=verified,
        category=drill_category(r.drill),
    )
