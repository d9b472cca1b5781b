"""Run drills: the one entry point behind `firedrill run`, the scheduler and `make drills`.

What to run is a list of drill names from the catalogue, `all`, or paths to feature files and
directories (a team's own drills), resolved against the caller's working directory. The scenarios
live in the Gherkin features, so a run is a pytest-bdd session over those files, in a child process
(its own signal handling and clean teardown), with firedrill's plugin doing the collection. The
session reports each evidence file and each harness error to a manifest, read back here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from _pytest.mark.expression import Expression  # pytest's own -k grammar

from firedrill.catalogue import catalogue, drill_names, get_drill
from firedrill.errors import ConfigError, HarnessError
from firedrill.evidence import EvidenceRecord, load_evidence
from firedrill.manifest import read_manifest
from firedrill.run_context import default_out
from firedrill.steps.registry import check_feature

# The drill session's own pytest settings, so that a pyproject.toml or pytest.ini in the caller's
# directory (their addopts, testpaths, plugins) does not change how drills run.
SESSION_INI = Path(__file__).resolve().parent / "drill_session.ini"
# A run found nothing in these: they hold output, not drills.
_SKIP_DIRS = {"reports", ".git", ".venv", "venv", "node_modules", "__pycache__"}


@dataclass(frozen=True, slots=True)
class Selection:
    """The feature files a run covers, and the names it was asked for (for the summary)."""

    features: tuple[Path, ...]
    label: str


def available_drills() -> list[str]:
    """The drills `all` and the schedule run (calibration is run by `firedrill calibrate`)."""
    return drill_names(scheduled_only=True)


def resolve(names: list[str]) -> list[str]:
    """Drill names checked against the catalogue; `all` (or nothing) is every scheduled drill."""
    if not names or names == ["all"]:
        return available_drills()
    for name in names:
        get_drill(name)
    return names


def _features_in(directory: Path) -> list[Path]:
    found = []
    for path in sorted(directory.rglob("*.feature")):
        if not _SKIP_DIRS.intersection(path.relative_to(directory).parts[:-1]):
            found.append(path)
    return found


def select(targets: list[str], cwd: Path | None = None) -> Selection:
    """Drill names, `all`, files or directories, to feature files. With no target: the feature
    files under the working directory when there are any (a drills repository), else `all`."""
    here = cwd or Path.cwd()
    if not targets:
        local = _features_in(here)
        if local:
            return Selection(tuple(p.resolve() for p in local), str(here))
        targets = ["all"]
    features: list[Path] = []
    for target in targets:
        path = here / target
        if target == "all":
            features += [get_drill(n).feature for n in available_drills()]
        elif target in catalogue():
            features.append(get_drill(target).feature)
        elif target.endswith(".feature") or path.is_dir() or os.sep in target:
            if path.is_dir():
                found = _features_in(path)
                if not found:
                    raise ConfigError(f"no .feature file under {target}")
                features += found
            elif path.is_file():
                features.append(path.resolve())
            else:
                raise ConfigError(f"feature file not found: {target}")
        else:
            known = ", ".join([*catalogue(), "all"])
            raise ConfigError(
                f"unknown drill '{target}' (known: {known}; or give a .feature file or directory)"
            )
    unique = tuple(dict.fromkeys(p.resolve() for p in features))
    return Selection(unique, " ".join(targets))


def check_selection(selection: Selection) -> None:
    """Every step of every selected feature has a definition: else one line naming file and line."""
    problems = [p for feature in selection.features for p in check_feature(feature)]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)


def check_writable(out_root: Path) -> None:
    """The evidence directory exists or can be made, and takes a file: said before any drill starts."""
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_root, prefix=".firedrill-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write evidence to {out_root}: {exc.strerror or exc}") from exc


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
    out_root: Path | None = None,
    config_path: Path | None = None,
    scenario_filter: str | None = None,
    live_log: bool = True,
    cwd: Path | None = None,
) -> RunSummary:
    here = (cwd or Path.cwd()).resolve()
    selection = select(drills, here)
    check_selection(selection)
    if scenario_filter:
        check_scenario_filter(scenario_filter)
    out = (out_root or default_out()).resolve()
    check_writable(out)
    with tempfile.TemporaryDirectory(prefix="firedrill-run-") as tmp:
        manifest = Path(tmp) / "manifest.jsonl"
        args = [
            sys.executable,
            "-m",
            "pytest",
            *[str(p) for p in selection.features],
            "-c",
            str(SESSION_INI),
            "--rootdir",
            str(here),
            "-q",
            "--no-header",
            "--tb=line",
            "--env",
            environment,
            "--firedrill-via",
            via,
            "--firedrill-out",
            str(out),
            "--firedrill-manifest",
            str(manifest),
        ]
        if config_path is not None:
            args += ["--firedrill-config", str((here / config_path).resolve())]
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
        code = _run_child(args, here)
        return _read_manifest(manifest, code)


def check_scenario_filter(expression: str) -> None:
    """A -k expression pytest cannot parse is one ConfigError line, before any server starts
    (pytest would report it only after collection, among its own output)."""
    try:
        Expression.compile(expression)
    except Exception as exc:  # SyntaxError since pytest 9.2, its own ParseError before
        why = getattr(exc, "msg", None) or getattr(exc, "message", None) or str(exc)
        raise ConfigError(f"-k {expression!r}: not a valid scenario filter ({why})") from exc


def _run_child(args: list[str], cwd: Path) -> int:
    """Run the drill session; on Ctrl-C/SIGTERM pass SIGINT on and wait for it to tear down
    (killing it outright would leave its staging servers behind)."""
    child = subprocess.Popen(args, cwd=str(cwd), env=dict(os.environ))
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
    for entry in read_manifest(manifest):
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
