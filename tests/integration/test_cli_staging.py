"""`firedrill staging up` in the foreground, and `staging down` sweeping up after a SIGKILLed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIREDRILL = [sys.executable, "-m", "harness.cli"]


def _staging_dirs() -> set[Path]:
    tmp = Path(tempfile.gettempdir())
    return {p for p in tmp.iterdir() if p.name.startswith(("firedrill-pg-", "firedrill-redis-"))}


def _start_up() -> tuple[subprocess.Popen[str], set[Path]]:
    proc = subprocess.Popen(
        [*FIREDRILL, "staging", "up"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    text = "".join(lines)
    assert "pg-a" in text and "sentinel" in text, text
    assert ":5432" not in text and "-p 6379" not in text
    # Only the directories this run printed: other runs on the machine may have stagings too.
    created = {p for p in _staging_dirs() if str(p) in text}
    return proc, created


def test_up_then_ctrl_c_stops_everything() -> None:
    proc, created = _start_up()
    assert len(created) == 2
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert "staging stopped" in out
    assert not any(p.exists() for p in created)


def test_down_sweeps_what_a_killed_run_left() -> None:
    proc, created = _start_up()
    os.kill(proc.pid, signal.SIGKILL)  # no teardown at all
    proc.wait()
    assert all(p.exists() for p in created)
    dry = subprocess.run(
        [*FIREDRILL, "staging", "down", "--dry-run"], capture_output=True, text=True, timeout=60
    )
    assert dry.returncode == 0 and all(str(p) in dry.stdout for p in created)
    assert all(p.exists() for p in created)
    down = subprocess.run([*FIREDRILL, "staging", "down"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert not any(p.exists() for p in created)
    leftover = subprocess.run(
        ["pgrep", "-af", "|".join(str(p) for p in created)], capture_output=True, text=True
    )
    assert leftover.stdout.strip() == ""
