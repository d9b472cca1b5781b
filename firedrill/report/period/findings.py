"""The findings file of a period report (`--findings review.toml`): what people add to the evidence.

Issues with owners, plan revisions, participants and sign-off, as TOML or JSON::

    [[findings]]
    id = "F-2026-03"
    title = "Standby promotion waited for a manual step"
    severity = "medium"              # low | medium | high | critical
    status = "in progress"           # open | in progress | resolved | accepted
    owner = "DBA team (J. Doe)"
    remediation = "Automate promotion in the runbook tooling"
    found = 2026-04-06               # optional dates
    due = 2026-06-30
    run_ids = ["20260406T090012Z-failover-1a2b3c"]   # the drills that showed it (optional)

    [[plan_revisions]]
    date = 2026-05-10
    description = "Runbook step 4: promote with pg_ctl promote, not a trigger file"
    reference = "RUNBOOK-12 v3"

    [[participants]]
    name = "J. Doe"
    role = "Incident commander"

    [[signoff]]
    role = "Head of Platform"
    name = "A. Smith"
"""

from __future__ import annotations

import json
import tomllib
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firedrill.errors import ConfigError


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Finding(_Model):
    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    severity: Literal["low", "medium", "high", "critical"] = "medium"
    status: Literal["open", "in progress", "resolved", "accepted"]
    owner: str = Field(min_length=1)
    remediation: str = ""
    found: date | None = None
    due: date | None = None
    closed: date | None = None
    drill: str | None = None
    run_ids: list[str] = Field(default_factory=list)


class PlanRevision(_Model):
    date: date
    description: str = Field(min_length=1)
    reference: str = ""
    author: str = ""


class Participant(_Model):
    name: str = Field(min_length=1)
    role: str = ""
    organisation: str = ""


class SignOffEntry(_Model):
    role: str = Field(min_length=1)
    name: str = ""


class FindingsFile(_Model):
    findings: list[Finding] = Field(default_factory=list)
    plan_revisions: list[PlanRevision] = Field(default_factory=list)
    participants: list[Participant] = Field(default_factory=list)
    signoff: list[SignOffEntry] = Field(default_factory=list)


def load_findings(path: Path) -> FindingsFile:
    """A findings file, `.toml` or `.json`; ConfigError (one line) names the file and the bad field."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(f"findings file {path} must be .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"findings file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read findings file {path}: {exc}") from exc
    try:
        raw = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"findings file {path} is not valid TOML: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"findings file {path} is not valid JSON: {exc}") from exc
    try:
        return FindingsFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise ConfigError(f"findings file {path}: {where}: {first['msg']}") from exc
