"""The command line as a user meets it: bad input is one line and exit 2; Ctrl-C cleans up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.processes import own_servers

FIREDRILL = [sys.executable, "-m", "firedrill.cli.main"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FIREDRILL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def staging_postgres_pids(run: int) -> set[int]:
    """The staging servers below the firedrill process `run` (other runs' stagings are theirs)."""
    return {int(line.split()[0]) for line in own_servers("firedrill-pg-", root=run)}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "nosuchdrill"], "unknown drill 'nosuchdrill'"),
        (["run", "failover", "--env", "nowhere"], "unknown environment 'nowhere'"),
        (["run", "failover", "--config", "/nonexistent.toml"], "config file not found"),
        (["report", "/nonexistent/evidence.json"], "evidence file not found"),
        (["frobnicate"], "No such command"),
        (["run", "failover", "--bogus-flag"], "No such option"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_invalid_profile_value_names_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "firedrill.toml"
    cfg.write_text('[profiles.fast]\nkind = "local"\n[profiles.fast.probe]\nrate_hz = -3\n')
    proc = run("run", "failover", "--env", "fast", "--config", str(cfg))
    assert proc.returncode == 2
    assert "profiles" not in proc.stdout
    assert "probe.rate_hz" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_corrupt_evidence_is_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "evidence.json"
    bad.write_text('{"run_id": 3}')
    proc = run("report", str(bad))
    assert proc.returncode == 2
    assert "not valid firedrill evidence" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_tears_the_staging_down(tmp_path: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [*FIREDRILL, "run", "failover", "--quiet", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not staging_postgres_pids(proc.pid):
        assert time.monotonic() < deadline, "the staging never started"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(2.5)  # into the first scenario: probes running
    if sig is signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C in a terminal reaches the whole foreground group
    else:
        proc.send_signal(sig)  # a supervisor stopping firedrill signals only the main process
    servers = staging_postgres_pids(proc.pid)  # its own, while it runs: they must all be gone after
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "interrupted" in err
    evidence = list(tmp_path.glob("*/evidence.json"))
    assert evidence, "the interrupted drill left no evidence"
    records = [json.loads(p.read_text()) for p in evidence]
    assert any(r["verdict"] == "aborted" for r in records)
    # This run's staging (named in its evidence) is gone: no process, no directory. Other runs on
    # the machine may have stagings of their own, so nothing else is compared.
    workdirs = [r["environment"]["settings"].get("workdir") for r in records]
    if not any(workdirs):  # cut short while the staging started: compare processes instead
        assert not [p for p in servers if _not_zombie(p)], "staging servers left behind"
    for workdir in filter(None, workdirs):
        assert not Path(workdir).exists(), f"{workdir} left behind"
        left = subprocess.run(["pgrep", "-f", workdir], capture_output=True, text=True).stdout.split()
        assert not [p for p in left if _not_zombie(int(p))], f"servers of {workdir} left behind"
