"""The sections of the period report computed from its runs alone: per-scenario summaries with
their trends, lost writes, data checks, issues, operators and scope."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from datetime import date

from markupsafe import Markup

from firedrill.evidence import EvidenceRecord
from firedrill.report.formatting import fmt_quantity, fmt_seconds
from firedrill.report.period.findings import FindingsFile
from firedrill.report.period.model import (
    CheckSummary,
    GroupSummary,
    Issue,
    LossSummary,
    OperatorRow,
    ScopeEnv,
    ScopeNode,
)
from firedrill.report.period.rows import Cell, RunRow
from firedrill.report.period.trends import build_trend_svg


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _absent(cells: Iterable[Cell]) -> str:
    """Why a group has no figure: its objective was never measured, or it does not apply."""
    return "not measured" if any(c.limit is not None for c in cells) else "—"


def _all_met(cells: Iterable[Cell]) -> bool | None:
    mets = [c.met for c in cells if c.met is not None]
    return all(mets) if mets else None


def group_summaries(rows: list[RunRow]) -> list[GroupSummary]:
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


def loss_summaries(rows: list[RunRow]) -> list[LossSummary]:
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


def check_summaries(rows: list[RunRow]) -> list[CheckSummary]:
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


def issue_list(rows: list[RunRow], findings: FindingsFile, start: date, end: date) -> list[Issue]:
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


def operator_rows(rows: list[RunRow]) -> list[OperatorRow]:
    by: dict[tuple[str, str, str], list[RunRow]] = {}
    for row in rows:
        op = row.record.operator
        by.setdefault((op.user, op.host, op.via), []).append(row)
    return [
        OperatorRow(user, host, via, len(grp), grp[0].started, grp[-1].started)
        for (user, host, via), grp in sorted(by.items())
    ]


def scope_environments(rows: list[RunRow]) -> list[ScopeEnv]:
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


def scope_drills(rows: list[RunRow]) -> list[tuple[str, list[str]]]:
    by: dict[str, list[str]] = {}
    for row in rows:
        scenarios = by.setdefault(row.record.drill, [])
        if row.record.scenario not in scenarios:
            scenarios.append(row.record.scenario)
    return sorted(by.items())


def scope_nodes(rows: list[RunRow]) -> list[ScopeNode]:
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
