"""The background load's chart and the values its report section shows, from the evidence alone.

The chart is one inline SVG (no script), in two panels over the load's life on the drill's clock:
acknowledged operations per second per window (green) with the failed ones stacked on top (red) and
the requested rate as a dashed line; below it p50 and p99 latency per window on a log scale. The
fault, the store's recovery (the canary) and the service's (the HTTP probe, when there is one) are
vertical marks, with the outage shaded between the fault and the store's recovery.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from firedrill.evidence import EvidenceRecord
from firedrill.evidence_load import LoadStats
from firedrill.report import palette

WIDTH = 1000.0
LEFT = 70.0
RIGHT = WIDTH - 20.0
RATE_H = 150.0
LAT_H = 110.0
GAP = 34.0
TOP = 26.0
MAX_SEQS_SHOWN = 200


def _n(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _rect(x: float, y: float, w: float, h: float, fill: str, extra: str = "") -> str:
    return f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" fill="{fill}"{extra}/>'


def _line(d: str, colour: str, width: float = 1.0, dash: str = "") -> str:
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="{width:g}"{dashed}/>'


def seq_ranges(seqs: Sequence[int], limit: int = MAX_SEQS_SHOWN) -> str:
    """'1528-1586, 1601, 1604-1610' (sorted, consecutive runs joined); at most `limit` seqs spelled."""
    ordered = sorted(set(seqs))
    parts: list[str] = []
    shown = 0
    i = 0
    while i < len(ordered) and shown < limit:
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        shown += j - i + 1
        i = j + 1
    rest = len(ordered) - shown
    return ", ".join(parts) + (f" and {rest:,} more (all in evidence.json)" if rest > 0 else "")


def _event_t(record: EvidenceRecord, kind: str) -> float | None:
    return next((e.t_s for e in record.timeline if e.kind == kind), None)


def _nice(top: float) -> float:
    if top <= 0:
        return 1.0
    mag = 10.0 ** math.floor(math.log10(top))
    for f in (1.0, 2.0, 2.5, 5.0, 10.0):
        if top <= f * mag:
            return float(f * mag)
    return float(10 * mag)


def _x_ticks(t0: float, t1: float) -> list[float]:
    step = _nice(max(t1 - t0, 1e-6) / 8)
    first = math.ceil(t0 / step) * step
    return [first + k * step for k in range(int((t1 - first) / step) + 1)]


class _Plot:
    def __init__(self, t0: float, t1: float) -> None:
        self.t0, self.t1 = t0, max(t1, t0 + 1e-6)
        self.parts: list[str] = []

    def x(self, t: float) -> float:
        return LEFT + (min(max(t, self.t0), self.t1) - self.t0) / (self.t1 - self.t0) * (RIGHT - LEFT)

    def text(
        self, x: float, y: float, text: str, *, anchor: str = "start", size: int = 11, fill: str = ""
    ) -> None:
        self.parts.append(
            f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{fill or palette.MUTED}">{escape(text)}</text>'
        )

    def add(self, element: str) -> None:
        self.parts.append(element)

    def frame(self, top: float, height: float, title: str) -> None:
        self.add(_rect(LEFT, top, RIGHT - LEFT, height, palette.PLOT, f' stroke="{palette.LINE}"'))
        self.text(LEFT, top - 8, title, size=12, fill=palette.INK)

    def grid(self, y: float, label: str) -> None:
        self.add(_line(f"M{_n(LEFT)} {_n(y)}H{_n(RIGHT)}", palette.GRID))
        self.text(LEFT - 6, y + 4, label, anchor="end")


def _marks(plot: _Plot, record: EvidenceRecord, load: LoadStats, top: float, bottom: float) -> None:
    fault = _event_t(record, "fault_issued")
    store = _event_t(record, "recovered")
    service = record.service.recovered_s if record.service else None
    if fault is not None:
        end = store if store is not None else load.stopped_s
        width = max(1.5, plot.x(end) - plot.x(fault))
        plot.add(_rect(plot.x(fault), top, width, bottom - top, palette.OUTAGE, ' opacity="0.55"'))
    for t, colour in ((fault, palette.FAULT), (store, palette.RECOVERED), (service, palette.ACCENT)):
        if t is not None:
            plot.add(_line(f"M{_n(plot.x(t))} {_n(top)}V{_n(bottom)}", colour, 1.5, "4 3"))


def _rate_panel(plot: _Plot, record: EvidenceRecord, load: LoadStats, top: float) -> float:
    bottom = top + RATE_H
    ws = [w for w in load.windows if w.dur_s > 0]
    full = max((w.dur_s for w in ws), default=0.0) * 0.5  # a short last window would spike the scale
    peak = max([load.requested_per_s, *((w.ok + w.failed) / w.dur_s for w in ws if w.dur_s >= full)])
    y_max = _nice(peak * 1.1)

    def y(v: float) -> float:
        return bottom - v / y_max * RATE_H

    plot.frame(top, RATE_H, "Operations per second (green acknowledged, red failed)")
    for k in range(5):
        plot.grid(y(y_max * k / 4), f"{y_max * k / 4:,.0f}")
    _marks(plot, record, load, top, bottom)
    for w in ws:
        xa, xb = plot.x(w.t_s), plot.x(w.t_s + w.dur_s)
        width = max(0.8, xb - xa - 0.6)
        ok_h = w.ok / w.dur_s / y_max * RATE_H
        fail_h = max(2.0, w.failed / w.dur_s / y_max * RATE_H) if w.failed else 0.0
        plot.add(_rect(xa, bottom - ok_h, width, ok_h, palette.GOOD, ' opacity="0.8"'))
        if fail_h:
            plot.add(_rect(xa, bottom - ok_h - fail_h, width, fail_h, palette.BAD))
    req = y(load.requested_per_s)
    plot.add(_line(f"M{_n(LEFT)} {_n(req)}H{_n(RIGHT)}", palette.LIMIT, 1.5, "6 4"))
    plot.text(
        RIGHT - 4, req - 5, f"requested {load.requested_per_s:,.0f}/s", anchor="end", fill=palette.LIMIT
    )
    return bottom


def _lat_panel(plot: _Plot, record: EvidenceRecord, load: LoadStats, top: float) -> float:
    bottom = top + LAT_H
    values = [v for w in load.windows for v in (w.p50_ms, w.p99_ms) if v is not None and v > 0]
    lo = math.floor(math.log10(min(values))) if values else -1
    hi = max(math.ceil(math.log10(max(values))) if values else 2, lo + 1)

    def y(v: float) -> float:
        return bottom - (math.log10(max(v, 10.0**lo)) - lo) / (hi - lo) * LAT_H

    plot.frame(top, LAT_H, "Latency of acknowledged operations per window (log scale)")
    for e in range(lo, hi + 1):
        plot.grid(y(10.0**e), f"{10.0**e:g} ms")
    _marks(plot, record, load, top, bottom)
    for attr, colour in (("p50_ms", palette.ACCENT), ("p99_ms", palette.OUTAGE_MARK)):
        segments: list[list[str]] = [[]]
        for w in load.windows:
            value = getattr(w, attr)
            if value is None:
                segments.append([])
            else:
                segments[-1].append(f"{_n(plot.x(w.t_s + w.dur_s / 2))} {_n(y(value))}")
        for seg in (s for s in segments if s):
            plot.add(_line("M" + " L".join(seg), colour, 1.8))
            if len(seg) == 1:
                cx, cy = seg[0].split()
                plot.add(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
    return bottom


def _legend(plot: _Plot, y: float, *, service: bool) -> None:
    items = [
        (palette.ACCENT, "p50 latency", ""),
        (palette.OUTAGE_MARK, "p99 latency", ""),
        (palette.FAULT, "fault", "4 3"),
        (palette.RECOVERED, "store back (canary)", "4 3"),
    ]
    if service:
        items.append((palette.ACCENT, "service back (HTTP probe)", "4 3"))
    x = LEFT
    for colour, label, dash in items:
        plot.add(_line(f"M{_n(x)} {_n(y - 4)}h18", colour, 2, dash))
        plot.text(x + 22, y, label)
        x += 30 + len(label) * 6.1 + 18


def build_load_svg(record: EvidenceRecord) -> str:
    load = record.load
    if load is None or not load.windows:
        return ""
    plot = _Plot(load.started_s, load.stopped_s)
    bottom = _rate_panel(plot, record, load, TOP)
    bottom = _lat_panel(plot, record, load, bottom + GAP)
    for t in _x_ticks(plot.t0, plot.t1):
        x = plot.x(t)
        plot.add(_line(f"M{_n(x)} {_n(bottom)}v5", palette.MUTED))
        plot.text(x, bottom + 18, f"{t:g}", anchor="middle")
    plot.text((LEFT + RIGHT) / 2, bottom + 34, "seconds since the drill started", anchor="middle")
    _legend(plot, bottom + 56, service=record.service is not None and record.service.recovered_s is not None)
    height = bottom + 66
    label = f"Background load of drill {record.drill}: throughput and latency around the fault"
    return (
        f'<svg viewBox="0 0 {_n(WIDTH)} {_n(height)}" width="100%" role="img" aria-label="{escape(label)}" '
        'class="load-chart" font-family="-apple-system, \'Segoe UI\', Roboto, Arial, sans-serif">'
        f"<title>{escape(label)}</title>" + "".join(plot.parts) + "</svg>"
    )


def load_context(record: EvidenceRecord, *, with_chart: bool) -> dict[str, object]:
    """What the load (and service) sections of both reports need, beyond the record itself."""
    load = record.load
    return {
        "load_svg": Markup(build_load_svg(record)) if with_chart and load is not None else "",
        "load_lost": seq_ranges(load.lost_seqs) if load is not None else "",
        "service_lost": seq_ranges(record.service.lost_seqs) if record.service is not None else "",
    }
