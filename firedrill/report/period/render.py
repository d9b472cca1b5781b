"""The period report as files: one self-contained HTML page (inline CSS and SVG, no script) and its
Markdown twin, deterministic for a given `generated_at`."""

from __future__ import annotations

from pathlib import Path

from firedrill.errors import ConfigError
from firedrill.evidence import write_json_atomic
from firedrill.report.period.model import PeriodReport
from firedrill.report.templating import ReportPaths, environment

HTML_TEMPLATE = "period_report.html.j2"
MD_TEMPLATE = "period_report.md.j2"


def render_html(report: PeriodReport) -> str:
    return environment().get_template(HTML_TEMPLATE).render(p=report)


def render_markdown(report: PeriodReport) -> str:
    return environment().get_template(MD_TEMPLATE).render(p=report)


def write_period_report(report: PeriodReport, out_dir: Path) -> ReportPaths:
    """`evidence-report-<from>_<to>.html` and `.md` in `out_dir`, each written atomically."""
    stem = f"evidence-report-{report.start.isoformat()}_{report.end.isoformat()}"
    paths = ReportPaths(html=out_dir / f"{stem}.html", md=out_dir / f"{stem}.md")
    html, md = render_html(report), render_markdown(report)
    try:
        write_json_atomic(paths.html, html)
        write_json_atomic(paths.md, md)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {out_dir}: {exc.strerror}") from exc
    return paths
