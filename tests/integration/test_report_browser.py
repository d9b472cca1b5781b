"""The HTML report opened in a real headless browser (Debian chromium): it renders, offline."""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from firedrill.audit import ledger
from firedrill.evidence import EvidenceRecord
from firedrill.report.period import build_period_report, write_period_report
from firedrill.report.run_report import render_reports
from tests.fixtures.browser import chromium, layout_at_width, requires_chromium
from tests.fixtures.evidence_factory import make_failed_record, make_record

WIDTH, HEIGHT = 1280, 2400
PHONE_WIDTH = 390  # CSS px, a current phone held upright
# A chart may be scaled down to this fraction of its drawn size at most: its 9.5 to 12.5 unit labels
# stay at least about 8 px high.
MIN_CHART_SCALE = 0.85

pytestmark = requires_chromium


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def render(record: EvidenceRecord, tmp_path: Path) -> Path:
    return render_reports(record, tmp_path / "run").html


def render_period(tmp_path: Path) -> Path:
    """A year of quarterly drills with one failed run and one missed quarter."""
    d = tmp_path / "ledger"
    starts = ["2026-01-05T09:00:02Z", "2026-04-06T09:00:02Z", "2026-10-05T09:00:02Z", "2026-10-06T10:00:00Z"]
    for i, started in enumerate(starts):
        factory = make_failed_record if i == 1 else make_record
        ledger.append(d, factory(run_id=f"run-{i + 1}", started_at=started, finished_at=started))
    report = build_period_report(
        d,
        date(2026, 1, 1),
        date(2026, 12, 31),
        ledger.verify(d),
        generated_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
    )
    return write_period_report(report, tmp_path / "period").html


@pytest.mark.parametrize(
    ("factory", "verdict"),
    [(make_record, "PASSED"), (make_failed_record, "FAILED")],
    ids=["passed", "failed"],
)
def test_report_screenshot_and_dom(
    tmp_path: Path, factory: Callable[[], EvidenceRecord], verdict: str
) -> None:
    record = factory()
    html = render(record, tmp_path)
    url = html.resolve().as_uri()

    png = tmp_path / "report.png"
    shot = chromium(tmp_path, f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}", url)
    assert png.exists(), f"no screenshot (rc={shot.returncode}): {shot.stderr[-2000:]}"
    assert png.stat().st_size > 50_000, "screenshot is suspiciously small: blank page?"
    assert png_size(png) == (WIDTH, HEIGHT)

    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert record.measurements.rto_s is not None
    rto = f"{record.measurements.rto_s:.3f} s"
    assert f"<small>VERDICT</small>{verdict}" in dom.stdout
    assert rto in dom.stdout
    assert "<svg" in dom.stdout and "Objective vs measured" in dom.stdout
    assert record.sha256() in dom.stdout


@pytest.mark.parametrize(
    "build",
    [
        lambda tmp_path: render(make_record(), tmp_path),
        lambda tmp_path: render(make_failed_record(), tmp_path),
        render_period,
    ],
    ids=["run-passed", "run-failed", "period"],
)
def test_report_fits_a_phone_screen(tmp_path: Path, build: Callable[[Path], Path]) -> None:
    """At 390 px nothing sticks out of the page (wide tables and charts scroll in their own box) and
    the charts are not shrunk until their labels are unreadable."""
    layout = layout_at_width(tmp_path, build(tmp_path), PHONE_WIDTH)
    assert layout["client_width"] <= PHONE_WIDTH
    assert layout["scroll_width"] <= layout["client_width"], (
        f"the page scrolls sideways ({layout['scroll_width']} px wide in {layout['client_width']} px): "
        f"{layout['overflowing']}"
    )
    assert layout["overflowing"] == []
    assert layout["charts"], "no chart in the report"
    for chart in layout["charts"]:
        assert chart["width"] >= MIN_CHART_SCALE * chart["viewbox_width"], chart
        if chart["width"] > layout["client_width"]:
            assert chart["in_scroller"], chart
