"""The one colour palette of the reports: the CSS of both HTML templates and the inline SVG charts.

The templates get the CSS custom properties from `css_custom_properties()` (through the Jinja
environment), the charts import the constants; no colour is spelled twice.
"""

from __future__ import annotations

INK = "#1f2933"  # text
MUTED = "#616e7c"  # secondary text, axes
LINE = "#d9dee4"  # table rules, borders
SOFT = "#f4f6f8"  # table headers, alternate chart rows
GRID = "#e3e6ea"  # chart grid lines
PAGE = "#eef1f4"  # the background around the page on screen
PLOT = "#fbfcfd"  # chart plot areas

GOOD = "#1b7f3b"  # met, passed, acknowledged
GOOD_BG = "#e7f5ec"
BAD = "#c62828"  # not met, failed
BAD_BG = "#fdecec"
WARN = "#a15c00"  # partial, in progress
WARN_BG = "#fff4e0"
FINDING = "#9a5b00"  # a failed non-blocking check
FINDING_BG = "#fff6e5"
GREY = "#4b5563"  # aborted, no runs
GREY_BG = "#eef0f3"
ACCENT = "#1d4ed8"  # promotion and restore events

OUTAGE = "#f9c7c7"  # the outage band of the timeline
OUTAGE_MARK = "#9b1c1c"  # the RTO bracket and its label
LIMIT = "#c2410c"  # an objective's limit line; a fault that returned
FAULT = "#b71c1c"  # fault, disaster, error events
CLEARED = "#7c3aed"  # fault cleared
RECOVERED = "#166534"  # recovered, verified

_CSS: tuple[tuple[str, str], ...] = (
    ("ink", INK),
    ("muted", MUTED),
    ("line", LINE),
    ("soft", SOFT),
    ("page", PAGE),
    ("good", GOOD),
    ("good-bg", GOOD_BG),
    ("bad", BAD),
    ("bad-bg", BAD_BG),
    ("warn", WARN),
    ("warn-bg", WARN_BG),
    ("finding", FINDING),
    ("finding-bg", FINDING_BG),
    ("grey", GREY),
    ("grey-bg", GREY_BG),
    ("accent", ACCENT),
)


def css_custom_properties() -> str:
    """`--ink: #1f2933; --muted: ...;` for the templates' `:root` rule."""
    return " ".join(f"--{name}: {colour};" for name, colour in _CSS)
