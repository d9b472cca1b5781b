"""The timeline chart of a drill report: an inline SVG built from the evidence record alone.

Pure functions, no I/O and no JavaScript: the SVG is embedded in the HTML report, prints as vector
graphics and renders the same in any browser. Every piece of text taken from the record is escaped.

Layout, top to bottom: event labels (staggered into lanes so close events stay legible), one row
per node that served probe operations (a tick per sample, green acknowledged, red failed), a
latency strip (log scale), the x axis in seconds since the drill's start, and a legend. When the
outage is short compared with the drill, a second panel zooms on the fault-to-recovery window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape

from firedrill.evidence import EventRecord, EvidenceRecord, SampleRecord
from firedrill.report import palette
from firedrill.report.formatting import event_label

MAX_SAMPLES = 4000
"""Above this many samples per panel, acknowledged samples are thinned out; failures are all kept."""

WIDTH = 1000.0
PLOT_LEFT = 160.0
PLOT_RIGHT = WIDTH - 24.0
LANE_H = 15.0
MAX_LANES = 6
ROW_H = 22.0
TICK_H = 14.0
LAT_H = 96.0
AXIS_H = 40.0
CHAR_W = 6.1  # average glyph advance of the 11 px sans-serif used for labels

OK_COLOUR = palette.GOOD
FAIL_COLOUR = palette.BAD
BAND_COLOUR = palette.OUTAGE
GRID_COLOUR = palette.GRID
TEXT_COLOUR = palette.INK
MUTED_COLOUR = palette.MUTED
NO_NODE = "(no node)"

_EVENT_COLOURS = {
    "fault_issued": palette.FAULT,
    "disaster": palette.FAULT,
    "fault_returned": palette.LIMIT,
    "fault_cleared": palette.CLEARED,
    "promotion_started": palette.ACCENT,
    "promotion_done": palette.ACCENT,
    "restore_started": palette.ACCENT,
    "restore_phase": palette.ACCENT,
    "restore_done": palette.ACCENT,
    "recovered": palette.RECOVERED,
    "verified": palette.RECOVERED,
    "error": palette.FAULT,
}
# Where RTO is counted from: the fault for a failover; the restore start for a restore drill, whose
# RTO is restore start to verified service (the disaster itself is marked, but is not the anchor).
_ANCHOR_KINDS = ("fault_issued", "restore_started", "disaster")
_KEY_KINDS = frozenset(
    {
        "fault_issued",
        "disaster",
        "promotion_started",
        "promotion_done",
        "recovered",
        "restore_started",
        "restore_done",
        "error",
    }
)


def _esc(text: str) -> str:
    return escape(text, quote=True)


def _num(value: float) -> str:
    """Short, stable number for SVG coordinates."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def anchor_event(record: EvidenceRecord) -> tuple[str, float] | None:
    """The event RTO is counted from, and its time on the drill clock."""
    for kind in _ANCHOR_KINDS:
        for event in record.timeline:
            if event.kind == kind:
                return kind, event.t_s
    return None


def anchor_time(record: EvidenceRecord) -> float | None:
    found = anchor_event(record)
    return found[1] if found else None


def downsample(samples: Sequence[SampleRecord], limit: int = MAX_SAMPLES) -> list[SampleRecord]:
    """At most about `limit` samples, in their original order. Every failed sample is kept, as are
    the first and last sample of each node and the first acknowledged sample after a failure (the
    recovery point); acknowledged samples in between are thinned evenly."""
    if len(samples) <= limit:
        return list(samples)
    keep: set[int] = set()
    first_by_node: dict[str | None, int] = {}
    last_by_node: dict[str | None, int] = {}
    previous_failed = False
    for i, sample in enumerate(samples):
        first_by_node.setdefault(sample.node, i)
        last_by_node[sample.node] = i
        if not sample.ok or previous_failed:
            keep.add(i)
        previous_failed = not sample.ok
    keep.update(first_by_node.values())
    keep.update(last_by_node.values())
    rest = [i for i in range(len(samples)) if i not in keep]
    budget = max(limit - len(keep), min(limit // 4, len(rest)))
    if budget > 0 and rest:
        step = len(rest) / budget
        keep.update(rest[int(k * step)] for k in range(min(budget, len(rest))))
    return [samples[i] for i in sorted(keep)]


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10.0 * magnitude


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    if step < 1 and round(step * 10**decimals) % 1 != 0:
        decimals += 1
    return f"{value:.{decimals}f}"


@dataclass(frozen=True, slots=True)
class _Row:
    key: tuple[str, str]
    label: str
    count: int


def _row_key(sample: SampleRecord, by_probe: bool) -> tuple[str, str]:
    return (sample.node or NO_NODE, sample.probe if by_probe else "")


def _rows(record: EvidenceRecord) -> tuple[list[_Row], bool]:
    by_probe = len({s.probe for s in record.samples}) > 1
    counts: dict[tuple[str, str], int] = {}
    for sample in record.samples:
        key = _row_key(sample, by_probe)
        counts[key] = counts.get(key, 0) + 1
    declared = [n.name for n in record.environment.nodes]

    def order(key: tuple[str, str]) -> tuple[int, int, str]:
        node = key[0]
        if node == NO_NODE:
            return (2, 0, key[1])
        if node in declared:
            return (0, declared.index(node), key[1])
        return (1, 0, node + "\0" + key[1])

    rows = [
        _Row(key=k, label=f"{k[0]} · {k[1]}" if by_probe else k[0], count=counts[k])
        for k in sorted(counts, key=order)
    ]
    return rows, by_probe


class _Svg:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def text(
        self,
        x: float,
        y: float,
        content: str,
        *,
        anchor: str = "start",
        size: float = 11,
        fill: str = TEXT_COLOUR,
        weight: str = "normal",
        halo: bool = False,
        title: str | None = None,
    ) -> None:
        extra = ' stroke="#fff" stroke-width="3" paint-order="stroke"' if halo else ""
        inner = _esc(content)
        if title is not None:
            inner = f"<title>{_esc(title)}</title>{inner}"
        self.add(
            f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" font-size="{_num(size)}" '
            f'fill="{fill}" font-weight="{weight}"{extra}>{inner}</text>'
        )


def _truncate(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _assign_lanes(
    events: Sequence[EventRecord], xmap: _XMap
) -> list[tuple[EventRecord, int, float, str, str]]:
    """(event, lane, label x, anchor, label) for each event, greedily placed in label lanes.

    Key events (fault, promotion, recovery, restore) are placed first; an event whose label finds no
    free lane gets lane -1: its line is drawn without a label (it stays in the events table).
    """
    lanes: list[list[tuple[float, float]]] = []
    placed: list[tuple[EventRecord, int, float, str, str]] = []
    ordered = sorted(events, key=lambda e: (e.kind not in _KEY_KINDS, e.t_s))
    for event in ordered:
        x = xmap(event.t_s)
        label = event_label(event.kind)
        width = len(label) * CHAR_W
        if x + 4 + width <= PLOT_RIGHT + 20:
            start, end, lx, anchor = x, x + 4 + width, x + 4, "start"
        else:
            start, end, lx, anchor = x - 4 - width, x, x - 4, "end"
        chosen = -1
        for i, lane in enumerate(lanes):
            if all(end + 6 <= a or start >= b + 6 for a, b in lane):
                chosen = i
                break
        if chosen < 0 and len(lanes) < MAX_LANES:
            lanes.append([])
            chosen = len(lanes) - 1
        if chosen >= 0:
            lanes[chosen].append((start, end))
        placed.append((event, chosen, lx, anchor, label))
    return sorted(placed, key=lambda p: p[0].t_s)


class _XMap:
    def __init__(self, t0: float, t1: float) -> None:
        self.t0 = t0
        self.t1 = t1 if t1 > t0 else t0 + 1.0

    def __call__(self, t: float) -> float:
        frac = (t - self.t0) / (self.t1 - self.t0)
        return PLOT_LEFT + frac * (PLOT_RIGHT - PLOT_LEFT)


def _lat_range(samples: Iterable[SampleRecord]) -> tuple[int, int]:
    durations = [s.dur_ms for s in samples if s.dur_ms > 0]
    if not durations:
        return (0, 3)
    lo = math.floor(math.log10(max(min(durations), 0.1)))
    hi = math.ceil(math.log10(max(durations)))
    if hi <= lo:
        hi = lo + 1
    return (lo, hi)


def _panel(
    svg: _Svg,
    record: EvidenceRecord,
    rows: list[_Row],
    by_probe: bool,
    t0: float,
    t1: float,
    top: float,
    title: str,
    max_samples: int,
) -> float:
    """Draw one panel whose top edge is at `top`; returns the y just below it."""
    xmap = _XMap(t0, t1)
    in_window = [s for s in record.samples if t0 <= s.t_s <= t1]
    shown = downsample(in_window, max_samples)
    events = [e for e in record.timeline if t0 <= e.t_s <= t1]
    placed = _assign_lanes(events, xmap)
    n_lanes = max((lane for _, lane, _, _, _ in placed), default=-1) + 1

    svg.text(8, top + 12, title, size=12.5, weight="bold")
    if len(shown) < len(in_window):
        note = f"showing {len(shown):,} of {len(in_window):,} samples (every failure kept)"
    else:
        note = f"{len(in_window):,} samples"
    unlabelled = sum(1 for p in placed if p[1] < 0)
    if unlabelled:
        note = f"{unlabelled} crowded event label(s) omitted, see the events table · " + note
    svg.text(PLOT_RIGHT, top + 12, note, anchor="end", size=10.5, fill=MUTED_COLOUR)

    anchor = anchor_time(record)
    rto = record.measurements.rto_s
    has_band = anchor is not None and rto is not None and anchor <= t1 and anchor + rto >= t0
    lanes_top = top + 22
    band_label_y = lanes_top + n_lanes * LANE_H + 13
    rows_top = lanes_top + n_lanes * LANE_H + (22 if has_band else 4)
    n_rows = max(len(rows), 1)
    lat_top = rows_top + n_rows * ROW_H + 10
    lat_bottom = lat_top + LAT_H
    plot_bottom = lat_bottom

    # Row backgrounds and labels.
    for i, row in enumerate(rows):
        y = rows_top + i * ROW_H
        if i % 2 == 0:
            svg.add(
                f'<rect x="{_num(PLOT_LEFT)}" y="{_num(y)}" width="{_num(PLOT_RIGHT - PLOT_LEFT)}" '
                f'height="{_num(ROW_H)}" fill="{palette.SOFT}"/>'
            )
        svg.text(
            PLOT_LEFT - 8,
            y + ROW_H / 2 + 4,
            _truncate(row.label, 24),
            anchor="end",
            title=f"{row.label}: {row.count:,} samples",
        )
    if not rows:
        svg.text((PLOT_LEFT + PLOT_RIGHT) / 2, rows_top + 15, "no probe samples recorded", anchor="middle")

    # Latency strip frame and log-scale grid.
    lo, hi = _lat_range(in_window)

    def lat_y(ms: float) -> float:
        value = math.log10(max(ms, 10.0**lo))
        return lat_bottom - (value - lo) / (hi - lo) * LAT_H

    svg.add(
        f'<rect x="{_num(PLOT_LEFT)}" y="{_num(lat_top)}" width="{_num(PLOT_RIGHT - PLOT_LEFT)}" '
        f'height="{_num(LAT_H)}" fill="{palette.PLOT}" stroke="{GRID_COLOUR}"/>'
    )
    step = 1 if hi - lo <= 5 else math.ceil((hi - lo) / 4)
    for exponent in range(lo, hi + 1, step):
        y = lat_y(10.0**exponent)
        svg.add(
            f'<line x1="{_num(PLOT_LEFT)}" y1="{_num(y)}" x2="{_num(PLOT_RIGHT)}" y2="{_num(y)}" '
            f'stroke="{GRID_COLOUR}"/>'
        )
        ms = 10.0**exponent
        label = f"{ms:g} ms" if ms < 1000 else f"{ms / 1000:g} s"
        svg.text(PLOT_LEFT - 8, y + 4, label, anchor="end", size=10, fill=MUTED_COLOUR)
    svg.text(8, lat_top + LAT_H / 2 + 4, "latency (log)", size=11, fill=MUTED_COLOUR)

    # X grid and axis.
    x_step = _nice_step(t1 - t0, 10)
    first = math.ceil(t0 / x_step - 1e-9) * x_step
    k = 0
    while first + k * x_step <= t1 + 1e-9:
        t = first + k * x_step
        x = xmap(t)
        svg.add(
            f'<line x1="{_num(x)}" y1="{_num(rows_top)}" x2="{_num(x)}" y2="{_num(plot_bottom + 5)}" '
            f'stroke="{GRID_COLOUR}"/>'
        )
        svg.text(x, plot_bottom + 17, _tick_label(t, x_step), anchor="middle", size=10.5, fill=MUTED_COLOUR)
        k += 1
    svg.add(
        f'<line x1="{_num(PLOT_LEFT)}" y1="{_num(plot_bottom)}" x2="{_num(PLOT_RIGHT)}" '
        f'y2="{_num(plot_bottom)}" stroke="{MUTED_COLOUR}"/>'
    )
    svg.text(
        (PLOT_LEFT + PLOT_RIGHT) / 2,
        plot_bottom + 33,
        "seconds since drill start",
        anchor="middle",
        size=11,
        fill=MUTED_COLOUR,
    )

    # Outage band: from the fault to the first recovered write (fault + RTO).
    band: tuple[float, float] | None = None
    if has_band and anchor is not None and rto is not None:
        a, b = max(anchor, t0), min(anchor + rto, t1)
        if b >= a:
            xa, xb = xmap(a), xmap(b)
            band = (xa, xb)
            width = max(xb - xa, 1.5)
            svg.add(
                f'<rect x="{_num(xa)}" y="{_num(rows_top)}" width="{_num(width)}" '
                f'height="{_num(plot_bottom - rows_top)}" fill="{BAND_COLOUR}" fill-opacity="0.55">'
                f"<title>{_esc(f'outage: fault to first recovered write, RTO {rto:.3f} s')}</title></rect>"
            )

    # Samples: one path per (row, outcome) keeps the SVG small even with thousands of ticks.
    row_index = {row.key: i for i, row in enumerate(rows)}
    ticks: dict[tuple[int, bool], list[str]] = {}
    dots: dict[bool, list[str]] = {True: [], False: []}
    for sample in shown:
        sx = _num(xmap(sample.t_s))
        i = row_index[_row_key(sample, by_probe)]
        sy = rows_top + i * ROW_H + (ROW_H - TICK_H) / 2
        ticks.setdefault((i, sample.ok), []).append(f"M{sx} {_num(sy)}v{_num(TICK_H)}")
        dots[sample.ok].append(f"M{sx} {_num(lat_y(sample.dur_ms))}h0.01")
    for ok in (True, False):
        colour = OK_COLOUR if ok else FAIL_COLOUR
        stroke_w = "1" if ok else "1.4"
        for (_, tick_ok), path in sorted(ticks.items()):
            if tick_ok == ok:
                svg.add(
                    f'<path d="{"".join(path)}" stroke="{colour}" stroke-width="{stroke_w}" fill="none"/>'
                )
        if dots[ok]:
            svg.add(
                f'<path d="{"".join(dots[ok])}" stroke="{colour}" stroke-width="3" '
                f'stroke-linecap="round" fill="none" stroke-opacity="{"0.6" if ok else "0.9"}"/>'
            )

    # Events: a dashed line from the label's lane down through the plot, and the label.
    for event, lane, lx, text_anchor, label in placed:
        x = xmap(event.t_s)
        colour = _EVENT_COLOURS.get(event.kind, MUTED_COLOUR)
        y_label = lanes_top + lane * LANE_H + 11
        y_line = y_label - 10 if lane >= 0 else rows_top
        tip = f"{label} at {event.t_s:.3f} s" + (f": {event.detail}" if event.detail else "")
        svg.add(
            f'<line x1="{_num(x)}" y1="{_num(y_line)}" x2="{_num(x)}" y2="{_num(plot_bottom)}" '
            f'stroke="{colour}" stroke-width="1.3" stroke-dasharray="4 3"><title>{_esc(tip)}</title></line>'
        )
        if lane >= 0:
            svg.text(lx, y_label, label, anchor=text_anchor, size=11, fill=colour, halo=True, title=tip)

    if band is not None:
        xa, xb = band
        label = f"RTO {fmt_rto(rto)}"
        width = len(label) * 6.6
        y = band_label_y
        by = rows_top - 3
        bracket = f"M{_num(xa)} {_num(by - 3)}v6M{_num(xa)} {_num(by)}H{_num(xb)}M{_num(xb)} {_num(by - 3)}v6"
        svg.add(f'<path d="{bracket}" stroke="{palette.OUTAGE_MARK}" stroke-width="1.2" fill="none"/>')
        if xb - xa >= width + 12:
            svg.text(
                (xa + xb) / 2,
                y,
                label,
                anchor="middle",
                size=12,
                fill=palette.OUTAGE_MARK,
                weight="bold",
                halo=True,
            )
        elif xb + 6 + width <= PLOT_RIGHT:
            svg.text(xb + 6, y, label, size=12, fill=palette.OUTAGE_MARK, weight="bold", halo=True)
        else:
            svg.text(
                xa - 6, y, label, anchor="end", size=12, fill=palette.OUTAGE_MARK, weight="bold", halo=True
            )

    return plot_bottom + AXIS_H


def fmt_rto(rto: float | None) -> str:
    return "not measured" if rto is None else f"{rto:.3f} s"


def _legend(svg: _Svg, top: float) -> float:
    y = top + 10

    def tick(colour: str, dashed: bool = False) -> Callable[[float], str]:
        dash = ' stroke-dasharray="3 2"' if dashed else ""
        return lambda x: f'<path d="M{_num(x)} {_num(y - 7)}v12" stroke="{colour}" stroke-width="2"{dash}/>'

    def band(x: float) -> str:
        return f'<rect x="{_num(x - 5)}" y="{_num(y - 7)}" width="12" height="12" fill="{BAND_COLOUR}"/>'

    items: list[tuple[Callable[[float], str], str]] = [
        (tick(OK_COLOUR), "acknowledged"),
        (tick(FAIL_COLOUR), "failed"),
        (band, "outage: fault to first recovered write (RTO)"),
        (tick(MUTED_COLOUR, dashed=True), "event"),
    ]
    svg.text(8, y + 4, "rows: node that served", size=11, fill=MUTED_COLOUR)
    x = PLOT_LEFT
    for shape, label in items:
        svg.add(shape(x))
        svg.text(x + 10, y + 4, label, size=11, fill=MUTED_COLOUR)
        x += 10 + len(label) * CHAR_W + 26
    return top + 24


def zoom_window(record: EvidenceRecord) -> tuple[float, float] | None:
    """The fault-to-recovery window with some margin, when it is small enough to deserve a zoom."""
    anchor = anchor_time(record)
    rto = record.measurements.rto_s
    if anchor is None or rto is None:
        return None
    t_end = _t_end(record)
    pad = max(0.25, 0.6 * rto)
    t0, t1 = max(0.0, anchor - pad), min(t_end, anchor + rto + pad)
    if t1 - t0 > 0.4 * t_end:
        return None
    return (t0, t1)


def _t_end(record: EvidenceRecord) -> float:
    ends = [record.duration_s]
    ends.extend(s.t_s + s.dur_ms / 1000 for s in record.samples)
    ends.extend(e.t_s for e in record.timeline)
    end = max(ends)
    return end if end > 0 else 1.0


def build_timeline_svg(record: EvidenceRecord, *, max_samples: int = MAX_SAMPLES) -> str:
    """The timeline chart as a standalone <svg> element (no external references)."""
    svg = _Svg()
    rows, by_probe = _rows(record)
    t_end = _t_end(record)
    y = _panel(svg, record, rows, by_probe, 0.0, t_end, 4.0, "Whole drill", max_samples)
    window = zoom_window(record)
    if window is not None:
        y += 8
        title = f"Zoom on the outage: {window[0]:.3f} s to {window[1]:.3f} s"
        y = _panel(svg, record, rows, by_probe, window[0], window[1], y, title, max_samples)
    y = _legend(svg, y)
    height = y + 4
    label = f"Timeline of drill {record.drill}: probe samples by node, events and outage"
    head = (
        f'<svg viewBox="0 0 {_num(WIDTH)} {_num(height)}" '
        f'width="100%" role="img" aria-label="{_esc(label)}" class="timeline-chart" '
        f"font-family=\"-apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif\">"
    )
    return head + f"<title>{_esc(label)}</title>" + "".join(svg.parts) + "</svg>"
