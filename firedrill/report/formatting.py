"""How values read in every report: seconds, counts, limits, Markdown-safe cells, key-figure tiles.

The lowest module of the report package: pure functions of their arguments, no I/O, no template.
`firedrill.report.templating` registers them as the Jinja filters and globals of both reports.
"""

from __future__ import annotations

from dataclasses import dataclass

Scalar = float | int | str | bool | None


@dataclass(frozen=True, slots=True)
class Figure:
    """One key figure of a report: a label, its value and how to read it."""

    label: str
    value: str
    hint: str
    tone: str = "neutral"  # "good", "bad", "neutral"


def fmt_seconds(value: float | None) -> str:
    """Seconds with millisecond precision, plus minutes (and hours) when large: '754.213 s (12 min 34 s)'."""
    if value is None:
        return "not measured"
    text = f"{value:.3f} s"
    if abs(value) >= 60:
        tenths = round(abs(value) * 10)
        hours, rest = divmod(tenths, 36000)
        minutes, seconds = divmod(rest, 600)
        sec = f"{seconds / 10:04.1f}"
        if hours:
            text += f" ({hours} h {minutes:02d} min {sec} s)"
        else:
            text += f" ({minutes} min {sec} s)"
    return text


def fmt_number(value: float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def fmt_quantity(value: float | None, unit: str) -> str:
    """A limit or measurement in its unit: seconds get ms precision, counts get their unit word."""
    if value is None:
        return "not measured"
    if unit == "s":
        return fmt_seconds(value)
    return f"{fmt_number(value)} {unit}".strip()


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


def fmt_scalar(value: Scalar) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return fmt_number(value)
    return value


def fmt_hz(value: float) -> str:
    return f"{value:.2f} Hz"


def fmt_pct(part: float, whole: float) -> str:
    if not whole:
        return "—"
    return f"{100.0 * part / whole:.1f} %"


def event_label(kind: str) -> str:
    """A timeline event kind as words: 'fault_issued' -> 'fault issued'."""
    return kind.replace("_", " ")


def md_cell(value: object) -> str:
    """Text safe inside a Markdown table cell: no pipe, no raw HTML, no line break."""
    text = str(value)
    for raw, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|")):
        text = text.replace(raw, escaped)
    return " ".join(text.replace("\r", "").split("\n")).strip() or " "
