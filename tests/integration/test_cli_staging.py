"""`firedrill staging up` in the foreground, and `staging down` sweeping up after a SIGKILLed run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIREDRILL = [sys.executable, "-m", "firedrill.cli.main"]


def _staging_dirs() -> set[Path]:
    tmp = Path(tempfile.gettempdir())
    return {p for p in tmp.iterdir() if p.name.startswith(("firedrill-pg-", "firedrill-redis-"))}


def _live_redis_ports(ports: set[str]) -> set[str]:
    """Those of `ports` still served by a (non-zombie) redis-server."""
    out = subprocess.run(["pgrep", "-a", "redis-server"], capture_output=True, text=True).stdout
    live = set()
    for line in out.splitlines():
        pid, _, cmd = line.partition(" ")
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        live |= {p for p in ports if f"127.0.0.1:{p}" in cmd and state != "Z"}
    return live


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
    try:
        assert len(created) == 2
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert "staging stopped" in out
    assert not any(p.exists() for p in created)


def test_down_keeps_a_staging_whose_owner_runs() -> None:
    proc, created = _start_up()
    try:
        down = subprocess.run([*FIREDRILL, "staging", "down"], capture_output=True, text=True, timeout=60)
        assert down.returncode == 0
        assert all(f"keeping {p}" in down.stdout for p in created), down.stdout
        assert all(p.exists() for p in created)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def test_down_sweeps_what_a_killed_run_left() -> None:
    proc, created = _start_up()
    os.kill(proc.pid, signal.SIGKILL)  # no teardown at all
    proc.wait()
    redis_dirs = [d for d in created if d.name.startswith("firedrill-redis-")]
    ports = {
        re.search(r"^port (\d+)", c.read_text(), re.M).group(1) for d in redis_dirs for c in d.rglob("*.conf")
    }  # type: ignore[union-attr]
    assert len(ports) == 6 and _live_redis_ports(ports) == ports
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
    assert _live_redis_ports(ports) == set(), "redis servers left behind"
