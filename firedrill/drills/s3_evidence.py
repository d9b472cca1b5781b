"""What the S3 restore drill did, as it did it, and the evidence made from that alone: the journal
of its writes, the manifests, the restore's plan and timings, and the measurements (RTO, RPO, the
objects lost or not restored, by name) that go into the evidence record."""

from __future__ import annotations

from dataclasses import dataclass, field

from firedrill.drills.base import round6
from firedrill.evidence import Measurements, Phase, utc_iso
from firedrill.object_versions import (
    ActionKind,
    Loss,
    Manifest,
    ObjectRecord,
    RestorePlan,
    RestorePoint,
    Verification,
    VersionLoad,
    key_index,
)

Extra = dict[str, float | int | str | bool | None]


@dataclass
class RestoreRecord:
    """One restore: to which point, what was expected there, the plan, and when each part ended."""

    point: RestorePoint
    expected: Manifest
    plan: RestorePlan
    list_s: float
    apply_s: float
    started_mono: float
    listed_mono: float
    applied_mono: float
    verified_mono: float | None = None
    verification: Verification | None = None
    verify_s: float | None = None
    loss: Loss | None = None


@dataclass
class Journal:
    bucket: str
    prefix: str = ""  # the drill's claimed prefix
    ready: bool | None = None  # None: readiness not checked yet
    records: dict[str, ObjectRecord] = field(default_factory=dict)  # version id -> what was written
    writes: list[tuple[str, float]] = field(default_factory=list)  # (key, ack time) of every PUT
    events: list[tuple[str, str | None]] = field(default_factory=list)  # (key, SHA-256 | None: deleted)
    before: Manifest | None = None  # the manifest just before the disaster
    disaster_at: float | None = None  # the second boundary the disaster happens after (wall)
    disaster_mono: float | None = None
    disaster_done_mono: float | None = None
    damaged: list[str] = field(default_factory=list)
    restore: RestoreRecord | None = None

    @property
    def data_prefix(self) -> str:
        return f"{self.prefix}data/"


def measure(j: Journal, threshold: float) -> tuple[Measurements, dict[str, float | None]]:
    """The evidence's measurements and the objectives' values (rto, rpo)."""
    r, t0 = j.restore, j.disaster_mono
    v = r.verification if r else None
    rto = r.verified_mono - t0 if r and r.verified_mono is not None and t0 is not None else None
    rpo = r.loss.window_s if r and r.loss is not None else None
    lost: list[str] = []
    if r and v is not None:
        lost = sorted(set(r.loss.keys if r.loss else []) | set(v.unrestored))
    before = sum(1 for rec in j.records.values() if j.disaster_at is None or rec.written_at < j.disaster_at)
    phases: list[Phase] = []
    if r and t0 is not None:
        if j.disaster_done_mono is not None:
            phases.append(phase("disaster", t0, j.disaster_done_mono, t0))
        phases += [
            phase("list versions", r.started_mono, r.listed_mono, t0),
            phase("restore", r.listed_mono, r.applied_mono, t0),
        ]
        if r.verified_mono is not None:
            phases.append(phase("verify (read back, SHA-256)", r.applied_mono, r.verified_mono, t0))
    m = Measurements(
        rto_s=round6(rto),
        recovered=(v.ok if v is not None else False) if j.ready else None,
        rpo_window_s=round6(rpo),
        acknowledged_writes=before if j.records else None,
        lost_writes=len(lost) if v is not None else None,
        lost_seqs=sorted(i for k in lost if (i := key_index(k)) is not None),
        recovered_node=f"s3://{j.bucket}" if j.prefix else None,
        phases=phases,
        extra=extra(j, threshold),
    )
    return m, {"rto": rto, "rpo": rpo}


def extra(j: Journal, threshold: float) -> Extra:
    x: Extra = {"bucket": j.bucket, "drill_prefix": j.prefix}
    if j.before is not None:
        x |= {
            "objects_in_manifest": len(j.before),
            "bytes_in_manifest": sum(rec.size for rec in j.before.values()),
            "multipart_objects": sum(1 for rec in j.before.values() if rec.parts > 1),
            "objects_damaged": len(j.damaged),
            "disaster_after": utc_iso(j.disaster_at or 0.0),
        }
    r = j.restore
    if r is not None:
        x |= _restore_extra(r, threshold, j.prefix)
    if j.ready is False:
        x["refused"] = "the bucket failed its readiness checks: no disaster injected"
    return x


def _restore_extra(r: RestoreRecord, threshold: float, prefix: str) -> Extra:
    counts = r.plan.counts()
    load = VersionLoad(r.plan.versions_listed, len(r.plan.restored), threshold, r.list_s, r.apply_s)
    x: Extra = {
        "restore_point": utc_iso(r.point.at),
        "restore_point_is": r.point.description,
        "objects_restored": len(r.plan.restored),
        "undeleted": counts[ActionKind.UNDELETE.value],
        "copied_back": counts[ActionKind.COPY.value],
        "hidden_born_after_point": counts[ActionKind.DELETE.value],
        "unchanged": counts[ActionKind.KEEP.value],
        "versions_listed": r.plan.versions_listed,
        "versions_per_restored_object": round(load.per_object, 3),
        "list_s": round6(r.list_s),
        "restore_s": round6(r.apply_s),
        "verify_s": round6(r.verify_s),
    }
    if r.verification is not None:
        v = r.verification
        x |= {
            "objects_verified": v.verified,
            "bytes_verified": v.bytes_verified,
            "objects_unrestored": _keys(v.unrestored, prefix),
            "objects_unexpected": _keys(v.unexpected, prefix),
        }
    if r.loss is not None:
        x |= {
            "objects_lost_count": len(r.loss.lost),
            "objects_lost": _keys(r.loss.keys, prefix),
            "objects_brought_back_after_deletion": _keys(list(r.loss.resurrected), prefix),
        }
    x["rto_definition"] = "the disaster to the last object read back and verified"
    x["rpo_definition"] = "newest write acknowledged before the disaster and not restored - restore point"
    return x


def _keys(keys: list[str], prefix: str) -> str:
    """Keys relative to the drill's prefix (recorded beside them as `drill_prefix`), or "none"."""
    return ", ".join(k.removeprefix(prefix) for k in keys) or "none"


def spread(keys: list[str], count: int) -> list[str]:
    """`count` of the keys, spread evenly from the first to the last."""
    if count <= 0 or not keys:
        return []
    if count == 1:
        return [keys[len(keys) // 2]]
    picked = [keys[round(i * (len(keys) - 1) / (count - 1))] for i in range(count)]
    return sorted(dict.fromkeys(picked))


def names(label: str, items: list[str], limit: int = 50) -> str:
    """'; label: a, b, c' for a check's detail ('' when there is none), at most `limit` names."""
    if not items:
        return ""
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"; {label}: {', '.join(items[:limit])}{more}"


def phase(name: str, start: float, end: float, t0: float) -> Phase:
    return Phase(
        name=name, start_s=round(start - t0, 6), end_s=round(end - t0, 6), duration_s=round(end - start, 6)
    )
