"""Drill reports for humans and auditors, rendered from the evidence record alone.

`render_reports` writes `report.html` (one self-contained file: inline CSS, inline SVG chart, no
script, font or image fetched from anywhere) and `report.md` (the same content as Markdown tables,
with a text outage summary instead of the chart). Rendering is deterministic: the same evidence
always gives byte-identical reports, so a past run can be rendered again and compared.
"""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from firedrill import __version__
from firedrill.evidence import EvidenceRecord, load_evidence, write_json_atomic
from firedrill.report.chart import anchor_event, anchor_time, build_timeline_svg
from firedrill.report.formatting import (
    Figure,
    Scalar,
    event_label,
    fmt_number,
    fmt_scalar,
    fmt_seconds,
)
from firedrill.report.load_chart import load_context
from firedrill.report.templating import ReportPaths, environment
from firedrill.report.zone_chart import zone_context

HTML_TEMPLATE = "report.html.j2"
MD_TEMPLATE = "report.md.j2"
HTML_NAME = "report.html"
MD_NAME = "report.md"


def _stale_acks(record: EvidenceRecord) -> tuple[str, Scalar] | None:
    for key, value in record.measurements.extra.items():
        if "stale" in key.lower():
            return key, value
    return None


def key_figures(record: EvidenceRecord) -> list[Figure]:
    m = record.measurements
    by_objective = {v.objective: v for v in record.verdicts}

    def tone_for(objective: str, fallback: str = "neutral") -> str:
        verdict = by_objective.get(objective)
        if verdict is None:
            return fallback
        return "good" if verdict.met else "bad"

    if m.outage_seen is False:
        outage_value, outage_hint = "none", "no failed operation was observed by the client"
    else:
        outage_value = fmt_seconds(m.outage_s)
        outage_hint = "last acknowledgement before the first failure to the first recovered write"
    lost_hint = "acknowledged writes missing after recovery"
    if m.lost_seqs:
        shown = ", ".join(str(s) for s in m.lost_seqs[:8])
        more = f" and {len(m.lost_seqs) - 8} more" if len(m.lost_seqs) > 8 else ""
        lost_hint += f": seq {shown}{more}"
    figures = [
        Figure(
            "RTO", fmt_seconds(m.rto_s), "fault to first acknowledged write after recovery", tone_for("rto")
        ),
        Figure("Outage seen by client", outage_value, outage_hint),
        Figure(
            "Lost writes",
            fmt_number(m.lost_writes),
            lost_hint,
            tone_for("lost_writes", "bad" if m.lost_writes else "neutral"),
        ),
        Figure("RPO window", fmt_seconds(m.rpo_window_s), "writes at risk before the fault", tone_for("rpo")),
        Figure("Acknowledged writes", fmt_number(m.acknowledged_writes), "writes the server confirmed"),
        Figure(
            "Recovered node",
            m.recovered_node or "—",
            {True: "service recovered", False: "service did NOT recover", None: "recovery not determined"}[
                m.recovered
            ],
            {True: "good", False: "bad", None: "neutral"}[m.recovered],
        ),
    ]
    if m.failed_writes is not None:
        figures.append(Figure("Failed writes", fmt_number(m.failed_writes), "writes refused or timed out"))
    if m.unacknowledged_present is not None:
        figures.append(
            Figure(
                "Unacknowledged but present",
                fmt_number(m.unacknowledged_present),
                "writes that failed for the client yet were committed",
            )
        )
    stale = _stale_acks(record)
    if stale is not None:
        key, value = stale
        bad = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        figures.append(
            Figure(
                "Stale acknowledgements",
                fmt_scalar(value),
                f"acknowledged by a node that was no longer primary ({key})",
                "bad" if bad else "neutral",
            )
        )
    return figures


def other_extra(record: EvidenceRecord) -> list[tuple[str, str]]:
    stale = _stale_acks(record)
    skip = stale[0] if stale else None
    return [(k, fmt_scalar(v)) for k, v in record.measurements.extra.items() if k != skip]


def outage_summary(record: EvidenceRecord) -> list[str]:
    """The chart's story in a few lines of text, for the Markdown report."""
    m = record.measurements
    lines: list[str] = []
    found = anchor_event(record)
    anchor = found[1] if found else None
    if found is not None:
        lines.append(f"{event_label(found[0]).capitalize()} at t = {found[1]:.3f} s after the drill start.")
    else:
        lines.append("No fault event was recorded.")
    if anchor is not None and m.rto_s is not None:
        lines.append(
            f"First acknowledged write after recovery at t = {anchor + m.rto_s:.3f} s"
            + (f" on {m.recovered_node}" if m.recovered_node else "")
            + f": RTO {fmt_seconds(m.rto_s)}."
        )
    elif m.rto_s is None:
        lines.append("The service did not recover within the drill: RTO not measured.")
    failed = [s for s in record.samples if not s.ok]
    if failed:
        first, last = failed[0], failed[-1]
        lines.append(
            f"{len(failed):,} of {len(record.samples):,} probe operations failed, "
            f"from t = {first.t_s:.3f} s to t = {last.t_s:.3f} s."
        )
    elif record.samples:
        lines.append(f"All {len(record.samples):,} probe operations were acknowledged.")
    if m.outage_seen is not None:
        lines.append(
            f"Outage as seen by the client: {fmt_seconds(m.outage_s)}."
            if m.outage_seen
            else "The client saw no outage."
        )
    return lines


def _context(record: EvidenceRecord, *, with_chart: bool) -> dict[str, object]:
    anchor = anchor_time(record)
    return {
        "r": record,
        "m": record.measurements,
        "sha256": record.sha256(),
        "figures": key_figures(record),
        "other_extra": other_extra(record),
        "outage_lines": outage_summary(record),
        "anchor": anchor,
        "chart_svg": Markup(build_timeline_svg(record)) if with_chart else "",
        "renderer": f"firedrill {__version__}",
        "objectives": {o.name: o for o in record.objectives},
        **load_context(record, with_chart=with_chart),  # the background load and service sections
        **zone_context(record, with_chart=with_chart),  # the zone drill's lanes chart
    }


def render_html(record: EvidenceRecord) -> str:
    return environment().get_template(HTML_TEMPLATE).render(_context(record, with_chart=True))


def render_markdown(record: EvidenceRecord) -> str:
    return environment().get_template(MD_TEMPLATE).render(_context(record, with_chart=False))


def render_reports(record: EvidenceRecord, out_dir: Path) -> ReportPaths:
    """Write report.html and report.md into out_dir (each atomically) and return their paths."""
    paths = ReportPaths(html=out_dir / HTML_NAME, md=out_dir / MD_NAME)
    html = render_html(record)
    md = render_markdown(record)
    write_json_atomic(paths.html, html)
    write_json_atomic(paths.md, md)
    return paths


def render_from_evidence(evidence_path: Path) -> ReportPaths:
    """Render the reports of a past run from its evidence.json, next to it."""
    return render_reports(load_evidence(evidence_path), evidence_path.parent)
