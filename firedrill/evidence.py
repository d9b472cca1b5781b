"""The evidence record: what an auditor reads, versioned, written atomically, even when a drill fails.

Reports are rendered from this record alone, so a past run can always be rendered again.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firedrill.errors import ConfigError
from firedrill.evidence_load import LoadStats, ServiceStats
from firedrill.evidence_zones import ZoneEvidence

# 1.1: Check.blocking (findings). 1.2: optional `load` and `service` (firedrill.evidence_load).
# 1.3: optional `zones` (firedrill.evidence_zones): a zone outage drill's layout, cuts and per-resource table.
# Readers accept 1.0 and 1.1 records; the ledger hashes stored bytes.
SCHEMA_VERSION = "1.3"

Verdict = Literal["passed", "failed", "error", "aborted"]


def new_run_id(drill: str) -> str:
    """A run's id, sortable by start time: 20240501T101500Z-failover-3fa2c1."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{drill}-{secrets.token_hex(3)}"


def utc_iso(epoch: float) -> str:
    """A wall time as the record stores it: ISO 8601 UTC to the millisecond, with a Z."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Objective(_Frozen):
    """A promise under test, e.g. rto <= 900 s."""

    name: str  # "rto", "rpo", "lost_writes", "backup_age", ...
    limit: float
    unit: str  # "s", "writes"
    description: str


class ObjectiveVerdict(_Frozen):
    objective: str
    limit: float
    unit: str
    measured: float | None  # None: could not be measured (counts as not met)
    met: bool
    note: str = ""


class Check(_Frozen):
    """A data or procedure check, e.g. 'every acknowledged write is present'.

    A non-blocking check that fails is a *finding*: recorded and shown, but not a breach, because no
    objective of the scenario promises it (e.g. writes lost within the promised RPO)."""

    name: str
    passed: bool
    detail: str = ""
    blocking: bool = True


class Phase(_Frozen):
    name: str
    start_s: float  # seconds from the fault (or restore start), monotonic
    end_s: float
    duration_s: float


class Measurements(_Frozen):
    rto_s: float | None = None
    recovered: bool | None = None
    outage_seen: bool | None = None
    outage_s: float | None = None  # first failed to first recovered write, as the client saw it
    rpo_window_s: float | None = None
    acknowledged_writes: int | None = None
    lost_writes: int | None = None
    lost_seqs: list[int] = Field(default_factory=list)
    failed_writes: int | None = None
    unacknowledged_present: int | None = None
    recovered_node: str | None = None
    phases: list[Phase] = Field(default_factory=list)
    extra: dict[str, float | int | str | bool | None] = Field(default_factory=dict)


class EventRecord(_Frozen):
    kind: str
    t_s: float  # seconds from the drill's start, monotonic
    wall: str  # ISO 8601 UTC
    detail: str = ""


class SampleRecord(_Frozen):
    probe: str
    seq: int
    op: str
    t_s: float  # start, seconds from the drill's start
    dur_ms: float
    ok: bool
    error: str | None = None
    node: str | None = None


class ProbeStats(_Frozen):
    target_hz: float
    achieved_hz: float
    samples: int
    ok: int
    failed: int
    errors: dict[str, int] = Field(default_factory=dict)
    nodes: dict[str, int] = Field(default_factory=dict)
    op_timeout_s: float
    connect_timeout_s: float


class Node(_Frozen):
    name: str
    role: str
    address: str
    version: str = ""


class Environment(_Frozen):
    name: str  # profile name, e.g. "local"
    kind: str  # "local-staging", "aws"
    host: str
    platform: str
    python: str
    firedrill_version: str
    git_revision: str
    servers: dict[str, str] = Field(default_factory=dict)  # component -> version
    nodes: list[Node] = Field(default_factory=list)
    settings: dict[str, str] = Field(default_factory=dict)  # non-secret settings that matter


class Operator(_Frozen):
    user: str
    host: str
    via: str  # "cli", "pytest", "schedule"


class SignOff(_Frozen):
    role: str
    name: str = ""
    date: str = ""
    signature: str = ""


class ControlRef(_Frozen):
    framework: str
    control: str
    how: str


class EvidenceRecord(_Frozen):
    schema_version: str = SCHEMA_VERSION
    run_id: str
    drill: str
    scenario: str
    fault: str | None = None
    started_at: str
    finished_at: str
    duration_s: float
    environment: Environment
    operator: Operator
    objectives: list[Objective]
    verdicts: list[ObjectiveVerdict]
    checks: list[Check]
    measurements: Measurements
    verdict: Verdict
    error: str | None = None
    timeline: list[EventRecord]
    samples: list[SampleRecord]
    probe_stats: ProbeStats | None = None
    load: LoadStats | None = None  # background load beside the canary (1.2)
    service: ServiceStats | None = None  # service-level probe through the application (1.2)
    zones: ZoneEvidence | None = None  # zone outage drill: layout, cuts, RTO and loss per resource (1.3)
    signoff: list[SignOff]
    compliance: list[ControlRef]
    prev_sha256: str | None = None  # hash chain link, set by the ledger

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def write_json_atomic(path: Path, text: str) -> None:
    """Temp file in the same directory, fsync, rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_evidence(record: EvidenceRecord, run_dir: Path) -> Path:
    path = run_dir / "evidence.json"
    write_json_atomic(path, record.model_dump_json(indent=2) + "\n")
    return path


def load_evidence(path: Path) -> EvidenceRecord:
    try:
        return EvidenceRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"evidence file not found: {path}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path} is not valid firedrill evidence: {where}: {first['msg']}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read evidence {path}: {exc}") from exc
