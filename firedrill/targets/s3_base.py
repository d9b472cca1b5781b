"""The interface the S3 restore drill talks to: one bucket, and the drill's own prefix in it.

A `BucketTarget` is a bucket (the local moto staging's or an AWS one; `firedrill.targets.s3_bucket`
implements both) in which the drill claims `<prefix>/firedrill-drill/<run id>/`, writes only there,
and deletes every version and delete marker there afterwards. Before any fault it reads what the
bucket promises: versioning, the lifecycle rules' noncurrent-version expiry, replication.

This module has no boto3 in it: the readiness rules below are pure functions of the configuration S3
returns (its own dict shapes), so they are unit-tested without a server, and the drill imports only
this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from firedrill.object_versions import ObjectVersion, ObservedObject
from firedrill.targets.base import TargetDescription

DRILL_DIR = "firedrill-drill"  # <prefix>/firedrill-drill/<run id>/: the only place a drill writes


def drill_prefix(prefix: str, run_id: str) -> str:
    base = prefix.strip("/")
    return f"{base}/{DRILL_DIR}/{run_id}/" if base else f"{DRILL_DIR}/{run_id}/"


@dataclass(frozen=True, slots=True)
class WriteAck:
    """An acknowledged write (or delete marker) and the version S3 gave it."""

    key: str
    version_id: str
    written_at: float  # wall clock at the acknowledgement
    parts: int = 1
    etag: str = ""
    delete_marker: bool = False


@dataclass(frozen=True, slots=True)
class CleanupResult:
    prefix: str
    versions: int
    delete_markers: int
    left: int  # rows still listed under the prefix afterwards (must be 0)
    detail: str = ""
    interrupted: bool = False  # a Ctrl-C came during the deletion, which went on: raise it after


# ---- lifecycle -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LifecycleRule:
    rule_id: str
    enabled: bool
    prefix: str  # "" covers the whole bucket
    other_filters: str = ""  # tags or object sizes, shown (a rule that may apply is counted)
    noncurrent_days: int | None = None  # NoncurrentVersionExpiration.NoncurrentDays
    keep_newer: int | None = None  # NoncurrentVersionExpiration.NewerNoncurrentVersions
    expiration_days: int | None = None  # Expiration.Days (current versions)


def parse_lifecycle(rules: Sequence[Mapping[str, Any]]) -> list[LifecycleRule]:
    """S3's lifecycle rules (GetBucketLifecycleConfiguration "Rules"), filter forms included:
    Filter.Prefix, Filter.And.Prefix, Filter.Tag/ObjectSize*, and the legacy top-level Prefix."""
    parsed: list[LifecycleRule] = []
    for raw in rules:
        flt: Mapping[str, Any] = raw.get("Filter") or {}
        both: Mapping[str, Any] = flt.get("And") or {}
        prefix = str(flt.get("Prefix", both.get("Prefix", raw.get("Prefix", ""))) or "")
        others = [k for k in ("Tag", "ObjectSizeGreaterThan", "ObjectSizeLessThan") if k in flt]
        others += [k for k in ("Tags", "ObjectSizeGreaterThan", "ObjectSizeLessThan") if k in both]
        noncurrent: Mapping[str, Any] = raw.get("NoncurrentVersionExpiration") or {}
        expiration: Mapping[str, Any] = raw.get("Expiration") or {}
        days = noncurrent.get("NoncurrentDays")
        parsed.append(
            LifecycleRule(
                rule_id=str(raw.get("ID", "?")),
                enabled=raw.get("Status") == "Enabled",
                prefix=prefix,
                other_filters=", ".join(others),
                noncurrent_days=int(days) if days is not None else None,
                keep_newer=noncurrent.get("NewerNoncurrentVersions"),
                expiration_days=expiration.get("Days"),
            )
        )
    return parsed


def overlaps(rule_prefix: str, prefix: str) -> bool:
    """A rule on `rule_prefix` reaches keys under `prefix` (it covers all of them, or some)."""
    return prefix.startswith(rule_prefix) or rule_prefix.startswith(prefix)


def retention_check(rules: Sequence[LifecycleRule], prefix: str, promised_days: int) -> tuple[bool, str]:
    """Noncurrent versions under `prefix` are kept at least `promised_days`: no enabled rule reaching
    the prefix expires them sooner (NoncurrentVersionExpiration.NoncurrentDays >= the promise)."""
    reaching = [r for r in rules if r.enabled and overlaps(r.prefix, prefix)]
    expiring = [r for r in reaching if r.noncurrent_days is not None]
    early = [r for r in expiring if (r.noncurrent_days or 0) < promised_days]

    def show(r: LifecycleRule) -> str:
        where = f"prefix '{r.prefix}'" + (f" + {r.other_filters}" if r.other_filters else "")
        keep = f", keeps {r.keep_newer} newer" if r.keep_newer else ""
        return f"{r.rule_id} ({where}): NoncurrentDays {r.noncurrent_days}{keep}"

    promise = f"promised {promised_days} days for '{prefix}'"
    if early:
        return False, f"expires noncurrent versions too early: {'; '.join(map(show, early))} ({promise})"
    if expiring:
        return True, f"{'; '.join(map(show, expiring))} ({promise})"
    disabled = sum(1 for r in rules if not r.enabled)
    note = f"; {disabled} disabled rule(s) ignored" if disabled else ""
    return True, f"no rule expires noncurrent versions under '{prefix}': kept indefinitely ({promise}){note}"


# ---- replication ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReplicationRule:
    rule_id: str
    enabled: bool
    prefix: str
    destination: str


def parse_replication(config: Mapping[str, Any] | None) -> list[ReplicationRule]:
    """GetBucketReplication's "ReplicationConfiguration" rules (None: no configuration)."""
    if not config:
        return []
    found = []
    for raw in config.get("Rules", []):
        flt: Mapping[str, Any] = raw.get("Filter") or {}
        both: Mapping[str, Any] = flt.get("And") or {}
        prefix = str(flt.get("Prefix", both.get("Prefix", raw.get("Prefix", ""))) or "")
        dest: Mapping[str, Any] = raw.get("Destination") or {}
        found.append(
            ReplicationRule(
                rule_id=str(raw.get("ID", "?")),
                enabled=raw.get("Status") == "Enabled",
                prefix=prefix,
                destination=str(dest.get("Bucket", "?")),
            )
        )
    return found


HEALTHY_STATUSES = frozenset({"COMPLETED", "PENDING"})


def replication_check(
    rules: Sequence[ReplicationRule] | None, prefix: str, probe_status: str | None
) -> tuple[bool, str]:
    """Replication configured, an enabled rule covering the prefix, and the probe object written
    under it replicating (PENDING or COMPLETED; FAILED or no status at all is not healthy)."""
    if rules is None:
        return False, "no replication configuration on the bucket (the profile says it replicates)"
    covering = [r for r in rules if r.enabled and prefix.startswith(r.prefix)]
    if not covering:
        listed = ", ".join(f"{r.rule_id} ('{r.prefix}', {'on' if r.enabled else 'off'})" for r in rules)
        return False, f"no enabled replication rule covers '{prefix}' (rules: {listed or 'none'})"
    shown = ", ".join(f"{r.rule_id} -> {r.destination}" for r in covering)
    if probe_status is None:
        return False, f"rules {shown}; the probe object has no replication status"
    ok = probe_status in HEALTHY_STATUSES
    return ok, f"rules {shown}; probe object ReplicationStatus={probe_status}"


# ---- the target ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BucketFacts:
    """What the bucket promises, read before any fault."""

    versioning: str  # "Enabled", "Suspended", "" (never enabled)
    lifecycle: list[LifecycleRule] = field(default_factory=list)
    replication: list[ReplicationRule] | None = None  # None: no replication configuration


class BucketTarget(Protocol):
    """One bucket with a drill-owned prefix in it. Every method that writes or deletes refuses a key
    outside a prefix this target claimed (GuardrailError)."""

    bucket: str
    prefix: str  # the backups' prefix the drill's own prefix sits under
    retention_days: int  # the promise: noncurrent versions kept at least this long
    replication_expected: bool

    def describe(self) -> TargetDescription: ...

    def claim_prefix(self, run_id: str) -> str:
        """The drill prefix of a run, refused unless it is empty (so all in it is the drill's)."""
        ...

    def facts(self) -> BucketFacts: ...

    def replication_status(self, key: str, *, timeout_s: float) -> str | None:
        """Write a probe object at `key` and return its ReplicationStatus (None: S3 gives none)."""
        ...

    def list_versions(self, prefix: str) -> list[ObjectVersion]: ...

    def put(self, key: str, body: bytes, *, part_size: int | None) -> WriteAck:
        """One object, in parts of `part_size` when it is larger than that (multipart upload)."""
        ...

    def delete(self, keys: Sequence[str]) -> list[WriteAck]:
        """Delete marker on each key (a plain delete on a versioned bucket)."""
        ...

    def remove_versions(self, rows: Sequence[tuple[str, str]]) -> int:
        """Permanently delete these (key, version id) rows; returns how many went."""
        ...

    def copy_version(self, version: ObjectVersion, *, part_size: int | None) -> WriteAck:
        """Copy an old version over its key (part by part when larger than `part_size`)."""
        ...

    def read(self, key: str) -> ObservedObject:
        """The current object's SHA-256 and size, from its bytes."""
        ...

    def delete_prefix(self, prefix: str) -> CleanupResult:
        """Delete every version and delete marker under a claimed prefix, through a Ctrl-C (which
        the result reports, for the caller to raise once its evidence is written)."""
        ...

    def close(self) -> None: ...
