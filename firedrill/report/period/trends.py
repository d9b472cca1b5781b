"""The trend charts of the period report: RTO, RPO window and lost writes of consecutive runs.

One inline SVG per drill scenario, three small panels side by side, built from escaped parts only
(no script, no external reference). Colours come from the report palette.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from firedrill.report.formatting import fmt_quantity
from firedrill.report.palette import BAD, GOOD, GRID, INK, LIMIT, MUTED, PLOT
from firedrill.report.period.rows import Cell, RunRow

CHART_W = 330.0
CHART_H = 190.0
PAD_L = 52.0
PAD_R = 12.0
PAD_T = 26.0
PAD_B = 34.0


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
        f'fill="{PLOT}" stroke="{GRID}"/>'
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
