"""The HTML report opened in a real headless browser (Debian chromium): it renders, offline."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.evidence import EvidenceRecord
from harness.report import render_reports
from tests.fixtures.evidence_factory import make_failed_record, make_record

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_S = 120
WIDTH, HEIGHT = 1280, 2400

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"chromium did not finish within {TIMEOUT_S} s: {' '.join(cmd)}\n{exc.stderr!r}")


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
