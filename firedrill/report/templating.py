"""The one Jinja environment every report renders with: templates from the package, strict
undefined (a missing value is a bug, not an empty cell), autoescape for HTML only, and every filter
and global the templates use, registered here once.

Imports only the lowest report modules (formatting, palette), never a report that renders with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from firedrill.report.formatting import (
    event_label,
    fmt_hz,
    fmt_number,
    fmt_pct,
    fmt_quantity,
    fmt_scalar,
    fmt_seconds,
    md_cell,
)
from firedrill.report.palette import css_custom_properties

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True, slots=True)
class ReportPaths:
    """Where a report was written: its HTML page and its Markdown twin."""

    html: Path
    md: Path


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        seconds=fmt_seconds,
        number=fmt_number,
        quantity=fmt_quantity,
        scalar=fmt_scalar,
        hz=fmt_hz,
        md=md_cell,
        event_label=event_label,
    )
    # The palette is ours, not the evidence's: safe to emit unescaped inside <style>.
    env.globals.update(pct=fmt_pct, palette_css=Markup(css_custom_properties()))
    return env
