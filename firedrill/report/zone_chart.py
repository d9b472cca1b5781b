"""The lanes chart of a zone drill report: one lane per resource (and client zone) on one timeline.

Pure, like `firedrill.report.chart`: an inline SVG built from the evidence record alone, every text
from the record escaped. Top to bottom: the fault band(s) (cut to heal, labelled), then per lane a
tick per probe operation (green acknowledged and kept, red failed, dark red acknowledged but lost:
split brain shows as a dark red run), the RTO bracket from the fault to that lane's first recovered
write, and the lane's label (resource, client zone, RTO, lost writes); on a service's lane, a dashed
mark where the slowest store behind it was back, and its bracket says how much later the service was;
the x axis in seconds since the drill's start; a legend.
"""

from __future__ import annotations

from html import escape

from markupsafe import Markup

from firedrill.evidence import EvidenceRecord
from firedrill.evidence_zones import ResourceRecord
from firedrill.report import palette
from firedrill.report.formatting import fmt_seconds

WIDTH = 1000.0
LEFT = 190.0
RIGHT = WIDTH - 24.0
TOP = 34.0
LANE_H = 46.0
TICK_H = 16.0
LOST = "#5b0f0f"


def _esc(text: str) -> str:
    return escape(text, quote=True)


def _n(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _steps(span: float) -> float:
    raw = span / 10
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600):
        if raw <= step:
            return float(step)
    return 1200.0


def _lane_label(row: ResourceRecord) -> tuple[str, str]:
    rto = "not recovered" if row.rto_s is None else f"RTO {fmt_seconds(row.rto_s)}"
    if row.status == "no outage":
        rto = "no outage"
    lost = "not read back" if row.lost_writes is None else f"{row.lost_writes} lost"
    return f"{row.resource}, clients in zone {row.client_zone}", f"{rto}, {lost}"


def _text(
    x: float, y: float, content: str, *, size: float = 11, fill: str = palette.INK, extra: str = ""
) -> str:
    return f'<text x="{_n(x)}" y="{_n(y)}" font-size="{_n(size)}" fill="{fill}"{extra}>{_esc(content)}</text>'


def _rect(x: float, y: float, w: float, h: float, fill: str, extra: str = "") -> str:
    return f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" fill="{fill}"{extra}/>'


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, width: float = 1) -> str:
    return (
        f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}" '
        f'stroke-width="{_n(width)}"/>'
    )


def build_zone_lanes_svg(record: EvidenceRecord) -> str:
    zones = record.zones
    if zones is None or not zones.resources:
        return ""
    rows = zones.resources
    by_probe = {row.probe: row for row in rows}
    samples = [s for s in record.samples if s.probe in by_probe]
    ends = [s.t_s + s.dur_ms / 1000 for s in samples] + [e.t_s for e in record.timeline]
    t0 = min([s.t_s for s in samples] or [0.0])
    t1 = max(ends or [t0 + 1.0])
    t1 = t1 if t1 > t0 else t0 + 1.0

    def x(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * (RIGHT - LEFT)

    bottom = TOP + LANE_H * len(rows)
    height = bottom + 62
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(WIDTH)} {_n(height)}" role="img" '
        'aria-label="Per-resource timeline of the zone drill" font-family="sans-serif">',
        _rect(LEFT, TOP - 6, RIGHT - LEFT, bottom - TOP + 6, palette.PLOT, f' stroke="{palette.LINE}"'),
    ]
    for fault in zones.faults:
        end = fault.healed_s if fault.healed_s is not None else t1
        width = max(1.0, x(end) - x(fault.issued_s))
        out.append(
            _rect(x(fault.issued_s), TOP - 6, width, bottom - TOP + 6, palette.OUTAGE, ' opacity="0.55"')
        )
        label = f"{fault.kind} {fault.zone}" + ("" if fault.healed_s is not None else " (healed at teardown)")
        out.append(
            _text(x(fault.issued_s) + 3, TOP - 12, label, fill=palette.FAULT, extra=' font-weight="bold"')
        )
    fault_s = zones.faults[0].issued_s if zones.faults else None
    for i, row in enumerate(rows):
        top = TOP + LANE_H * i
        mid = top + LANE_H / 2 - 4
        if i % 2:
            out.append(_rect(LEFT, top, RIGHT - LEFT, LANE_H, palette.SOFT, ' opacity="0.6"'))
        name, figures = _lane_label(row)
        out.append(_text(8, mid, name, size=12, extra=' font-weight="bold"'))
        out.append(_text(8, mid + 15, figures, fill=palette.MUTED))
        lost = set(row.lost_seqs)
        for s in (s for s in samples if s.probe == row.probe):
            colour = (LOST if s.seq in lost else palette.GOOD) if s.ok else palette.BAD
            out.append(_line(x(s.t_s), mid - TICK_H / 2, x(s.t_s), mid + TICK_H / 2, colour))
        if fault_s is not None and row.rto_s is not None:
            y = mid + TICK_H / 2 + 6
            x0, x1 = x(fault_s), x(fault_s + row.rto_s)
            out.append(
                f'<path d="M{_n(x0)} {_n(y - 3)} V{_n(y)} H{_n(x1)} V{_n(y - 3)}" '
                f'stroke="{palette.OUTAGE_MARK}" stroke-width="1.3" fill="none"/>'
            )
            label = f"RTO {fmt_seconds(row.rto_s)}"
            if row.store_rto_s is not None and row.gap_s is not None:
                xs = x(fault_s + row.store_rto_s)
                out.append(
                    f'<line x1="{_n(xs)}" y1="{_n(top + 3)}" x2="{_n(xs)}" y2="{_n(top + LANE_H - 3)}" '
                    f'stroke="{palette.INK}" stroke-width="1.2" stroke-dasharray="3 2"/>'
                )
                label += f" ({row.gap_s:+.3f} s after the stores)"
            if x1 + 4 + len(label) * 6.0 > WIDTH:  # no room after the bracket: end the label under it
                out.append(
                    _text(x1, y + 12, label, size=10.5, fill=palette.OUTAGE_MARK, extra=' text-anchor="end"')
                )
            else:
                out.append(_text(x1 + 4, y + 3, label, size=10.5, fill=palette.OUTAGE_MARK))
    step = _steps(t1 - t0)
    tick = step * int(t0 / step)
    axis_y = bottom + 4
    middle = ' text-anchor="middle"'
    while tick <= t1 + 1e-9:
        if tick >= t0 - 1e-9:
            out.append(_line(x(tick), axis_y, x(tick), axis_y + 5, palette.MUTED))
            out.append(_text(x(tick), axis_y + 17, f"{tick:g}", size=10.5, fill=palette.MUTED, extra=middle))
        tick += step
    out.append(
        _text(
            RIGHT,
            axis_y + 31,
            "seconds since the drill started",
            size=10.5,
            fill=palette.MUTED,
            extra=' text-anchor="end"',
        )
    )
    legend = (
        (palette.GOOD, "acknowledged"),
        (palette.BAD, "failed"),
        (LOST, "acknowledged, then lost (read back)"),
        (palette.OUTAGE, "zone cut off"),
    )
    lx = LEFT
    for colour, text in legend:
        out.append(_rect(lx, axis_y + 24, 10, 10, colour))
        out.append(_text(lx + 14, axis_y + 33, text, size=10.5))
        lx += 26 + len(text) * 6.0
    if any(row.store_rto_s is not None for row in rows):
        out.append(
            f'<line x1="{_n(lx + 5)}" y1="{_n(axis_y + 23)}" x2="{_n(lx + 5)}" y2="{_n(axis_y + 35)}" '
            f'stroke="{palette.INK}" stroke-width="1.2" stroke-dasharray="3 2"/>'
        )
        out.append(_text(lx + 14, axis_y + 33, "stores back", size=10.5))
    out.append("</svg>")
    return "".join(out)


def zone_context(record: EvidenceRecord, *, with_chart: bool) -> dict[str, object]:
    """What the zones section of the reports needs beyond the record: the lanes chart (HTML only)."""
    return {"zone_lanes_svg": Markup(build_zone_lanes_svg(record)) if with_chart else ""}
