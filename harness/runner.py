"""Run drills by name: the one entry point behind `firedrill run`, the scheduler and the README.

The scenarios live in the Gherkin features, so a run is a pytest-bdd session over the chosen feature
files, in a child process (its own signal handling and clean teardown). The session reports each
evidence file and each harness error to a manifest file, read back here for the summary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError, HarnessError
from harness.evidence import EvidenceRecord, load_evidence
from harness.run_context import DEFAULT_OUT, REPO_ROOT

FEATURES = REPO_ROOT / "features"

# drill name -> the pytest-bdd module binding its feature file
DRILLS: dict[str, str] = {
    "failover": "test_failover.py",
    "pitr": "test_pitr.py",
    "cache-failover": "test_cache_failover.py",
}


def available_drills() -> list[str]:
    return [name for name, f in DRILLS.items() if (FEATURES / f).is_file()]


def resolve(names: list[str]) -> list[str]:
    known = available_drills()
    if not names or names == ["all"]:
        return known
    for name in names:
        if name not in known:
            raise ConfigError(f"unknown drill '{name}' (known: {', '.join([*known, 'all'])})")
    return names


@dataclass
class RunSummary:
    records: list[EvidenceRecord] = field(default_factory=list)
    evidence_paths: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pytest_exit: int = 0

    @property
    def exit_code(self) -> int:
        """0 every objective met, 1 an objective breached, 2 the harness could not do its job."""
        if self.errors or any(r.verdict in ("error", "aborted") for r in self.records):
            return 2
        if self.pytest_exit not in (0, 1) or not self.records:
            return 2
        if any(r.verdict == "failed" for r in self.records) or self.pytest_exit == 1:
            return 1
        return 0


def run_drills(
    drills: list[str],
    environment: str = "local",
    via: str = "cli",
    *,
    out_root: Path = DEFAULT_OUT,
    config_path: Path | None = None,
    scenario_filter: str | None = None,
    live_log: bool = True,
) -> RunSummary:
    names = resolve(drills)
    if not FEATURES.is_dir():
        raise ConfigError(f"feature files not found at {FEATURES}: run firedrill from its checkout")
    with tempfile.TemporaryDirectory(prefix="firedrill-run-") as tmp:
        manifest = Path(tmp) / "manifest.jsonl"
        args = [
            sys.executable,
            "-m",
            "pytest",
            *[str(FEATURES / DRILLS[n]) for n in names],
            "--rootdir",
            str(REPO_ROOT),
            "-c",
            str(REPO_ROOT / "pyproject.toml"),
            "-p",
            "no:cacheprovider",
            "-q",
            "--no-header",
            "--tb=line",
            "--env",
            environment,
            "--firedrill-via",
            via,
            "--firedrill-out",
            str(out_root),
            "--firedrill-manifest",
            str(manifest),
        ]
        if config_path is not None:
            args += ["--firedrill-config", str(config_path)]
        if scenario_filter:
            args += ["-k", scenario_filter]
        if live_log:
            args += [
                "-o",
                "log_cli=true",
                "--log-cli-level=INFO",
                "--log-cli-format=%(asctime)s %(message)s",
                "--log-cli-date-format=%H:%M:%S",
            ]
        code = _run_child(args)
        return _read_manifest(manifest, code)


def _run_child(args: list[str]) -> int:
    """Run the drill session; on Ctrl-C/SIGTERM pass SIGINT on and wait for it to tear down
    (killing it outright would leave its staging servers behind)."""
    child = subprocess.Popen(args, cwd=str(REPO_ROOT), env=dict(os.environ))
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def _read_manifest(manifest: Path, pytest_exit: int) -> RunSummary:
    summary = RunSummary(pytest_exit=pytest_exit)
    if not manifest.is_file():
        summary.errors.append(f"the drill session wrote no results (pytest exit {pytest_exit})")
        return summary
    for line in manifest.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if "error" in entry:
            if entry["error"] not in summary.errors:
                summary.errors.append(entry["error"])
        elif "evidence" in entry:
            path = Path(entry["evidence"])
            try:
                summary.records.append(load_evidence(path))
                summary.evidence_paths.append(path)
            except HarnessError as exc:
                summary.errors.append(str(exc))
    return summary


def append_manifest(manifest: Path, entry: dict[str, str]) -> None:
    with manifest.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
