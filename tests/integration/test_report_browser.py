"""The HTML report opened in a real headless browser (Debian chromium): it renders, offline."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from firedrill.evidence import EvidenceRecord
from firedrill.report.run_report import render_reports
from tests.fixtures.browser import chromium, requires_chromium
from tests.fixtures.evidence_factory import make_failed_record, make_record

WIDTH, HEIGHT = 1280, 2400

pytestmark = requires_chromium


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def render(record: EvidenceRecord, tmp_path: Path) -> Path:
    return render_reports(record, tmp_path / "run").html


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
