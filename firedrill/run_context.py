"""Who runs a drill, where, and where its evidence goes."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from firedrill import __version__
from firedrill.evidence import Environment, Operator
from firedrill.targets.base import TargetDescription


def default_out() -> Path:
    """Evidence and reports go under the caller's ./reports/out, like any CLI's output."""
    return Path.cwd() / "reports" / "out"


def default_ledger() -> Path:
    return Path.cwd() / "reports" / "ledger"


def default_job_store() -> Path:
    return Path.cwd() / "reports" / "schedule.sqlite"


def git_revision() -> str:
    """The revision of the repository the drills are run from (the caller's), so the evidence names
    the version of the feature files that ran; "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass(frozen=True, slots=True)
class RunContext:
    environment: str = "local"
    via: str = "cli"
    out_root: Path = field(default_factory=default_out)
    operator: str = ""

    def operator_record(self) -> Operator:
        user = self.operator or os.environ.get("FIREDRILL_OPERATOR") or getpass.getuser()
        return Operator(user=user, host=socket.gethostname(), via=self.via)

    def environment_record(self, target: TargetDescription) -> Environment:
        return Environment(
            name=self.environment,
            kind=target.environment_kind,
            host=socket.gethostname(),
            platform=platform.platform(),
            python=platform.python_version(),
            firedrill_version=__version__,
            git_revision=git_revision(),
            servers=dict(target.servers),
            nodes=list(target.nodes),
            settings=dict(target.settings),
        )
