"""Versioned object restore as pure logic: which version of each key a bucket held at a point in time,
what a restore has to do to bring that state back, and whether what is there afterwards is exactly it.

No I/O here. The S3 adapter (`firedrill.targets.s3_bucket`) turns ListObjectVersions pages into
`ObjectVersion` rows and reads objects back as `ObservedObject`s; the drill (`firedrill.drills.s3_restore`)
calls these functions on them, and the unit tests call them on synthetic listings.

Times are Unix epoch seconds. S3 reports LastModified to the whole second, so a restore point is a
second boundary the drill keeps its own writes away from (`misplaced` proves that afterwards), and a
key's versions are ordered as S3 lists them (newest first) where two share a second. Checksums are the
drill's own SHA-256 of the content: an ETag is no checksum once an object was uploaded in parts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """One row of ListObjectVersions: a version or a delete marker."""

    key: str
    version_id: str
    last_modified: float
    is_latest: bool
    delete_marker: bool = False
    size: int = 0
    etag: str = ""  # shown, never compared: a multipart ETag is "md5-of-part-md5s-N"


@dataclass(frozen=True, slots=True)
class RestorePoint:
    """The moment a restore brings the bucket back to. A version written exactly at `at` belongs to
    the restore only when `inclusive`."""

    at: float
    inclusive: bool = False
    description: str = ""

    def holds(self, when: float) -> bool:
        return when <= self.at if self.inclusive else when < self.at


def history(versions: Iterable[ObjectVersion]) -> dict[str, list[ObjectVersion]]:
    """Versions and delete markers by key, newest first. S3 lists each key's versions newest first
    (delete markers apart): among rows of the same second the latest one comes first, and the stable
    sort keeps S3's order for the others."""
    by_key: dict[str, list[ObjectVersion]] = {}
    for version in versions:
        by_key.setdefault(version.key, []).append(version)
    for rows in by_key.values():
        rows.sort(key=lambda v: (v.last_modified, v.is_latest), reverse=True)
    return dict(sorted(by_key.items()))


def version_as_of(newest_first: Iterable[ObjectVersion], point: RestorePoint) -> ObjectVersion | None:
    """The key's version at the point; None when the key did not exist then or was deleted."""
    for version in newest_first:
        if point.holds(version.last_modified):
            return None if version.delete_marker else version
    return None


def state_as_of(versions: Iterable[ObjectVersion], point: RestorePoint) -> dict[str, ObjectVersion]:
    """Every key that existed at the point, with the version it had then."""
    state: dict[str, ObjectVersion] = {}
    for key, rows in history(versions).items():
        found = version_as_of(rows, point)
        if found is not None:
            state[key] = found
    return state


def current_state(versions: Iterable[ObjectVersion]) -> dict[str, ObjectVersion]:
    """Every key that exists now (its latest version is not a delete marker)."""
    return {v.key: v for v in versions if v.is_latest and not v.delete_marker}


# ---- the restore plan ------------------------------------------------------------------------------
class ActionKind(StrEnum):
    KEEP = "keep"  # the current version is the one at the point
    UNDELETE = "undelete"  # only delete markers hide it: remove them, the version is current again
    COPY = "copy"  # copy the version at the point over the current one (a new version, same bytes)
    DELETE = "delete"  # the key did not exist at the point: a delete marker hides it again
    ABSENT = "absent"  # did not exist at the point and does not exist now


CHANGING = frozenset({ActionKind.UNDELETE, ActionKind.COPY, ActionKind.DELETE})


@dataclass(frozen=True, slots=True)
class RestoreAction:
    key: str
    kind: ActionKind
    source: ObjectVersion | None = None  # the version at the point (KEEP, UNDELETE, COPY)
    current: ObjectVersion | None = None  # the newest row of the key now (version or delete marker)
    markers: tuple[str, ...] = ()  # UNDELETE: version ids of the delete markers to remove

    @property
    def changes(self) -> bool:
        return self.kind in CHANGING


@dataclass(frozen=True, slots=True)
class RestorePlan:
    point: RestorePoint
    actions: tuple[RestoreAction, ...]
    versions_listed: int  # rows of the listing: versions and delete markers
    keys_listed: int

    def of_kind(self, kind: ActionKind) -> list[RestoreAction]:
        return [a for a in self.actions if a.kind is kind]

    @property
    def restored(self) -> list[RestoreAction]:
        """The actions that change the bucket: one per object the restore brings back or removes."""
        return [a for a in self.actions if a.changes]

    def counts(self) -> dict[str, int]:
        return {kind.value: len(self.of_kind(kind)) for kind in ActionKind}


def plan_restore(versions: Iterable[ObjectVersion], point: RestorePoint) -> RestorePlan:
    """One action per key listed, bringing it back to its state at the point.

    A key whose version at the point is hidden only by delete markers (written after the point) is
    undeleted by removing those markers; anything overwritten since is copied back from its version,
    so the history in between stays; a key born after the point gets a delete marker."""
    rows = list(versions)
    actions: list[RestoreAction] = []
    for key, newest_first in history(rows).items():
        wanted = version_as_of(newest_first, point)
        current = newest_first[0]
        exists_now = not current.delete_marker
        if wanted is None:
            kind = ActionKind.DELETE if exists_now else ActionKind.ABSENT
            actions.append(RestoreAction(key, kind, None, current))
            continue
        if current.version_id == wanted.version_id:
            actions.append(RestoreAction(key, ActionKind.KEEP, wanted, current))
            continue
        newer = newest_first[: newest_first.index(wanted)]
        if all(v.delete_marker for v in newer):
            markers = tuple(v.version_id for v in newer)
            actions.append(RestoreAction(key, ActionKind.UNDELETE, wanted, current, markers))
        else:
            actions.append(RestoreAction(key, ActionKind.COPY, wanted, current))
    return RestorePlan(point, tuple(actions), versions_listed=len(rows), keys_listed=len(history(rows)))


# ---- manifests and verification ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ObjectRecord:
    """One object version as the drill wrote it: what its content must hash to."""

    key: str
    version_id: str
    sha256: str
    size: int
    written_at: float  # wall clock when S3 acknowledged the write
    parts: int = 1  # > 1: uploaded in parts (its ETag is no content checksum)


Manifest = dict[str, ObjectRecord]  # key -> the version it holds


def manifest_of(
    state: Mapping[str, ObjectVersion], written: Mapping[str, ObjectRecord]
) -> tuple[Manifest, list[str]]:
    """The manifest of a bucket state: each key's version joined with what the drill wrote as that
    version (by version id). Returns the manifest and the problems: a version the drill did not
    write, or whose size S3 reports differently from what was written."""
    manifest: Manifest = {}
    problems: list[str] = []
    for key, version in sorted(state.items()):
        record = written.get(version.version_id)
        if record is None or record.key != key:
            problems.append(f"{key}: version {version.version_id} was not written by the drill")
            continue
        if record.size != version.size:
            problems.append(f"{key}: S3 lists {version.size} bytes, {record.size} were written")
        manifest[key] = record
    return manifest, problems


@dataclass(frozen=True, slots=True)
class ObservedObject:
    """An object as read back: the SHA-256 and size of its bytes."""

    key: str
    sha256: str
    size: int
    version_id: str = ""


class Problem(StrEnum):
    MISSING = "missing"  # expected, not there
    CHECKSUM = "checksum"  # there, other content
    SIZE = "size"  # there, other size
    UNEXPECTED = "unexpected"  # there, but did not exist at the restore point


@dataclass(frozen=True, slots=True)
class Mismatch:
    key: str
    problem: Problem
    detail: str


@dataclass(frozen=True, slots=True)
class Verification:
    expected: int
    verified: int  # present with the expected SHA-256 and size
    bytes_verified: int
    mismatches: tuple[Mismatch, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def keys(self, *problems: Problem) -> list[str]:
        return sorted({m.key for m in self.mismatches if m.problem in problems})

    @property
    def unrestored(self) -> list[str]:
        """Keys that do not hold their content of the restore point."""
        return self.keys(Problem.MISSING, Problem.CHECKSUM, Problem.SIZE)

    @property
    def unexpected(self) -> list[str]:
        return self.keys(Problem.UNEXPECTED)


def verify(expected: Mapping[str, ObjectRecord], observed: Mapping[str, ObservedObject]) -> Verification:
    """Every expected object present with its SHA-256 and size, and nothing else present."""
    mismatches: list[Mismatch] = []
    verified = 0
    verified_bytes = 0
    for key, want in sorted(expected.items()):
        got = observed.get(key)
        if got is None:
            mismatches.append(Mismatch(key, Problem.MISSING, f"absent, expected {want.size} bytes"))
            continue
        ok = True
        if got.size != want.size:
            mismatches.append(Mismatch(key, Problem.SIZE, f"{got.size} bytes, expected {want.size}"))
            ok = False
        if got.sha256 != want.sha256:
            detail = (
                f"sha256 {got.sha256[:12]}..., expected {want.sha256[:12]}... (version {want.version_id})"
            )
            mismatches.append(Mismatch(key, Problem.CHECKSUM, detail))
            ok = False
        if ok:
            verified += 1
            verified_bytes += got.size
    for key in sorted(set(observed) - set(expected)):
        mismatches.append(Mismatch(key, Problem.UNEXPECTED, "present, did not exist at the restore point"))
    return Verification(len(expected), verified, verified_bytes, tuple(mismatches))


# ---- what the restore point costs ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Loss:
    """Writes acknowledged before the disaster that a restore to the point does not bring back."""

    lost: tuple[ObjectRecord, ...]  # the pre-disaster content of each such key
    resurrected: tuple[str, ...]  # deleted between the point and the disaster; the restore brings them back
    window_s: float  # the newest lost write minus the restore point; 0 when nothing is lost

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.lost]


def loss(
    before_disaster: Mapping[str, ObjectRecord], at_point: Mapping[str, ObjectRecord], point: RestorePoint
) -> Loss:
    """Compare the state just before the disaster with the state at the restore point, by content."""
    lost = tuple(
        rec
        for key, rec in sorted(before_disaster.items())
        if (old := at_point.get(key)) is None or (old.sha256, old.size) != (rec.sha256, rec.size)
    )
    resurrected = tuple(sorted(set(at_point) - set(before_disaster)))
    window = max((r.written_at for r in lost), default=point.at) - point.at
    return Loss(lost, resurrected, max(0.0, window))


def damaged(events: Iterable[tuple[str, str | None]], expected: Mapping[str, ObjectRecord]) -> list[str]:
    """Keys whose content now differs from the restore point's, from the drill's own journal of
    (key, SHA-256 written, or None for a delete marker) in the order they happened, not from any
    listing: the ground truth of what a restore must change."""
    now: dict[str, str | None] = {}
    for key, digest in events:
        now[key] = digest
    keys = set(now) | set(expected)
    return sorted(k for k in keys if now.get(k) != (expected[k].sha256 if k in expected else None))


def misplaced(
    listed: Iterable[ObjectVersion],
    made_before: Iterable[str],
    made_after: Iterable[str],
    point: RestorePoint,
) -> list[str]:
    """Versions (by id) the drill made before the point that S3 dates after it, or the reverse: a
    restore point that S3's one-second timestamps (or a clock skew) cannot separate."""
    by_id = {v.version_id: v for v in listed}
    wrong = [vid for vid in made_before if vid in by_id and not point.holds(by_id[vid].last_modified)]
    wrong += [vid for vid in made_after if vid in by_id and point.holds(by_id[vid].last_modified)]
    return sorted(f"{by_id[vid].key}@{vid}" for vid in wrong)


@dataclass(frozen=True, slots=True)
class VersionLoad:
    """How many versions a restore had to list per object it restored, and where its time went."""

    versions_listed: int
    restored: int
    threshold: float
    list_s: float
    restore_s: float

    @property
    def per_object(self) -> float:
        return self.versions_listed / self.restored if self.restored else float(self.versions_listed)

    @property
    def slow(self) -> bool:
        return self.per_object > self.threshold

    def detail(self) -> str:
        total = self.list_s + self.restore_s
        share = f"{100 * self.list_s / total:.0f}%" if total > 0 else "-"
        return (
            f"{self.versions_listed} versions listed for {self.restored} restored objects: "
            f"{self.per_object:.1f} per object (threshold {self.threshold:g}); listing took "
            f"{self.list_s:.3f} s ({share}), the restore calls {self.restore_s:.3f} s"
        )


_INDEX = re.compile(r"(\d+)$")


def key_index(key: str) -> int | None:
    """The number at the end of a key ('.../obj-00042' -> 42): the drill numbers its objects, so a
    lost object shows as a sequence number in the evidence like a lost canary write."""
    match = _INDEX.search(key)
    return int(match.group(1)) if match else None
