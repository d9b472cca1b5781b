"""The S3 restore drill: objects in a versioned backup bucket are deleted, overwritten or wiped by
mistake; restore them from their versions to a point in time, prove every object is exactly as the
manifest says (SHA-256 and size), and measure it.

Order: readiness (versioning, noncurrent-version retention, replication; a bucket that fails is
refused and no disaster is injected) -> the drill's own objects of known content under
`<prefix>/firedrill-drill/<run id>/data/` -> (a noted restore point, later writes) -> the manifest
and the disaster, at a second boundary -> list versions, plan (pure), restore -> read every object
back and verify -> delete the drill's prefix, every version and delete marker. Only a BucketTarget is
talked to, local staging or AWS; the version logic is `firedrill.object_versions`.

RTO = the disaster to the verified restore (the last object read back and compared); RPO = the newest
write acknowledged before the disaster that the restore does not bring back, minus the restore point
(0 when nothing is lost).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from enum import StrEnum

from firedrill.catalogue import BUILTIN_FEATURES, DrillSpec, LocalPlan
from firedrill.drills.base import DrillRun, Objectives
from firedrill.drills.s3_evidence import Journal, RestoreRecord, measure, names, spread
from firedrill.errors import ConfigError, HarnessError
from firedrill.evidence import EvidenceRecord, Objective, utc_iso
from firedrill.object_versions import (
    ActionKind,
    Manifest,
    ObjectRecord,
    ObjectVersion,
    RestorePlan,
    RestorePoint,
    Verification,
    VersionLoad,
    current_state,
    damaged,
    loss,
    manifest_of,
    misplaced,
    plan_restore,
    state_as_of,
    verify,
)
from firedrill.targets.s3_base import BucketTarget, WriteAck, replication_check, retention_check
from firedrill.timeline import EventKind

SPEC = DrillSpec(
    name="s3-restore",
    summary="versioned S3 objects restored to a point in time after deletes, overwrites or a wiped prefix",
    feature=BUILTIN_FEATURES / "s3_restore.feature",
    category="backup",
    stores=("s3",),
    steps=("firedrill.steps.s3_restore",),
    local_plan=LocalPlan(
        starts="an S3 server (moto, server mode) with a versioned bucket and lifecycle rules",
        faults="deletes / overwrites / wipes its own objects, restores them from their versions",
    ),
    aws_plan="firedrill.targets.s3_bucket:plan_target",
)


class Refusal(StrEnum):
    """Why a bucket is refused before any fault, as a scenario states it."""

    VERSIONING = "versioning is not enabled"
    RETENTION = "noncurrent versions expire too early"
    REPLICATION = "replication is not healthy"


CHECK_VERSIONING = "bucket versioning is enabled"
CHECK_REPLICATION = "replication is healthy"
CHECK_VERIFIED = "every object restored with its checksum and size at the restore point"
CHECK_ABSENT = "no object that did not exist at the restore point is present"
CHECK_SELECTION = "version selection matches the manifest at the restore point"
CHECK_GROUND_TRUTH = "restored exactly the objects that differ from the restore point"
CHECK_LOST = "lost objects are exactly the writes made after the restore point"
CHECK_FINDING = "restore not slowed by the number of versions"
CHECK_CLEANUP = "drill prefix deleted: every version and delete marker"
CHECK_NO_DISASTER = "no disaster injected into a refused bucket"


def _human(seconds: float) -> str:
    """'15 minutes', '90 s': how an objective reads in the report."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} s"


def retention_name(days: int) -> str:
    return f"noncurrent versions are kept at least {days} days"


def refused_name(why: Refusal) -> str:
    return f"bucket refused before any fault: {why.value}"


@dataclass(frozen=True, slots=True)
class S3Objectives(Objectives):
    """RTO/RPO of the restore; a scenario expecting the bucket to be refused judges neither."""

    expect_refusal: Refusal | None = None
    versions_per_object: float = 10.0  # above this many versions listed per restored object: a finding

    def as_list(self) -> list[Objective]:
        if self.expect_refusal is not None:
            return []
        return [
            Objective(
                name="rto",
                limit=self.rto_s,
                unit="s",
                description=f"every object restored and verified within {_human(self.rto_s)} of the mistake",
            ),
            Objective(
                name="rpo",
                limit=self.rpo_s,
                unit="s",
                description="writes acknowledged before the mistake but not restored span at most "
                f"{_human(self.rpo_s)}",
            ),
        ]


class Disaster(StrEnum):
    DELETE = "objects-deleted"  # delete markers on some keys
    OVERWRITE = "objects-overwritten"  # a small wrong object over some keys
    WIPE = "prefix-wiped"  # a delete marker on every key under the prefix


class Choice(StrEnum):
    BEFORE_DISASTER = "just before the mistake"
    NOTED = "the noted restore point"


@dataclass(frozen=True, slots=True)
class S3RestoreSettings:
    clock_margin_s: float = 0.2  # writes stay this far from a restore point (S3 dates to the second)
    replication_timeout_s: float = 30.0
    mistake_bytes: int = 1024  # what an object is overwritten with by mistake


@dataclass
class S3RestoreDrill:
    target: BucketTarget
    run: DrillRun
    settings: S3RestoreSettings = field(default_factory=S3RestoreSettings)
    j: Journal = field(init=False)  # what the drill did: the evidence is made from it
    _generation: dict[str, int] = field(default_factory=dict)
    _part_size: dict[str, int | None] = field(default_factory=dict)
    _next_index: int = 0
    _point: RestorePoint | None = None
    _point_manifest: Manifest | None = None
    _cleaned: bool = False
    _interrupted: bool = False

    def __post_init__(self) -> None:
        self.j = Journal(bucket=self.target.bucket)

    @property
    def prefix(self) -> str:
        """The drill's claimed prefix, "" until the bucket is opened."""
        return self.j.prefix

    @property
    def ready(self) -> bool | None:
        """Whether the bucket passed its readiness checks (None: not checked yet)."""
        return self.j.ready

    @property
    def objectives(self) -> S3Objectives:
        obj = self.run.objectives
        return obj if isinstance(obj, S3Objectives) else S3Objectives(rto_s=obj.rto_s, rpo_s=obj.rpo_s)

    @property
    def data_prefix(self) -> str:
        return self.j.data_prefix

    # ---- steps (each one a Gherkin step) --------------------------------------------------------
    def open(self) -> None:
        """Describe the bucket, claim the drill's prefix, check what the bucket promises. A bucket
        that fails a check is refused: nothing is written to it and no disaster is injected."""
        target = self.target
        self.run.target = target.describe()
        self.j.prefix = target.claim_prefix(self.run.run_id)
        self.run.check("the drill prefix is new and empty", True, f"s3://{target.bucket}/{self.prefix}")
        expected = self.objectives.expect_refusal
        blocking = expected is None
        facts = target.facts()
        status = facts.versioning or "never enabled"
        failed: list[Refusal] = []
        if not self.run.check(
            CHECK_VERSIONING, facts.versioning == "Enabled", f"Status={status}", blocking=blocking
        ):
            failed.append(Refusal.VERSIONING)
        ok, detail = retention_check(facts.lifecycle, self.prefix, target.retention_days)
        if not self.run.check(retention_name(target.retention_days), ok, detail, blocking=blocking):
            failed.append(Refusal.RETENTION)
        if target.replication_expected and not failed:
            probe = f"{self.prefix}probe/replication"
            covered = facts.replication is not None
            status_seen = (
                target.replication_status(probe, timeout_s=self.settings.replication_timeout_s)
                if covered
                else None
            )
            ok, detail = replication_check(facts.replication, self.prefix, status_seen)
            if not self.run.check(CHECK_REPLICATION, ok, detail, blocking=blocking):
                failed.append(Refusal.REPLICATION)
        self.j.ready = not failed
        reasons = ", ".join(r.value for r in failed)
        if expected is not None:
            self.run.check(
                refused_name(expected),
                expected in failed,
                f"refused: {reasons}" if failed else "the bucket passed every readiness check",
            )
        if failed:
            self.run.mark(
                EventKind.NOTE, f"bucket {target.bucket} refused ({reasons}): no disaster is injected"
            )
        else:
            self.run.mark(
                EventKind.STEADY_STATE_OK, f"bucket {target.bucket} ready; drill prefix {self.prefix}"
            )

    def write_objects(self, count: int, size: int, *, part_size: int | None = None, times: int = 1) -> None:
        """`count` new objects of `size` bytes with known content, each written `times` times (every
        write a new version), in parts of `part_size` when larger than that."""
        if not self._proceed(f"{count} objects not written"):
            return
        if part_size is not None and part_size < 5 * 1024 * 1024:
            raise ConfigError(f"part size {part_size} bytes is below S3's 5 MiB minimum for a multipart part")
        keys = [self._new_key() for _ in range(count)]
        for key in keys:
            self._part_size[key] = part_size
            for _ in range(times):
                self._write(key, size)
        parts = self.j.records[self._latest(keys[-1])].parts if keys else 1
        how = f", uploaded in {parts} parts of {part_size} bytes" if parts > 1 else ""
        again = f", each written {times} times" if times > 1 else ""
        self.run.mark(
            EventKind.NOTE, f"{count} objects of {size} bytes written under {self.data_prefix}{how}{again}"
        )

    def note_point(self) -> RestorePoint:
        """A restore point on a second boundary, with the manifest of the prefix at that moment."""
        if not self._proceed("no restore point noted"):
            return RestorePoint(time.time())
        at = self._boundary()
        point = RestorePoint(at, inclusive=False, description=f"the noted restore point {utc_iso(at)}")
        self._point = point
        self._point_manifest = self._manifest("at the noted restore point")
        self.run.mark(
            EventKind.NOTE,
            f"restore point noted: {utc_iso(at)}, {len(self._point_manifest)} objects in its manifest",
        )
        return point

    def write_after_point(self, new: int, overwritten: int) -> None:
        """Legitimate writes after the noted point: new objects, and new versions of existing ones
        (a restore to the point does not bring them back: the RPO)."""
        if not self._proceed("no writes after the restore point"):
            return
        existing = sorted(self._generation)
        size = self.j.records[self._latest(existing[0])].size if existing else 64 * 1024
        for key in spread(existing, overwritten):
            self._write(key, self.j.records[self._latest(key)].size)
        for _ in range(new):
            key = self._new_key()
            self._part_size[key] = None
            self._write(key, size)
        self.run.mark(
            EventKind.NOTE, f"after the restore point: {new} new objects, {overwritten} overwritten"
        )

    def disaster(self, kind: Disaster, count: int | None = None) -> None:
        """The mistake, after a second boundary and the manifest of what is there just before it."""
        if not self._proceed("no disaster injected"):
            return
        self.j.disaster_at = self._boundary()
        self.j.before = self._manifest("before the disaster")
        keys = sorted(self.j.before)
        if kind is Disaster.WIPE:
            chosen = keys
        else:
            if count is None or not 0 < count <= len(keys):
                raise ConfigError(f"cannot damage {count} of the {len(keys)} objects under the drill prefix")
            chosen = spread(keys, count)
        self.j.damaged = chosen
        self.run.fault = kind.value
        self.run.mark(
            EventKind.DISASTER, f"{kind.value}: {len(chosen)} of {len(keys)} objects under {self.data_prefix}"
        )
        self.j.disaster_mono = time.monotonic()
        if kind is Disaster.OVERWRITE:
            for key in chosen:
                body = hashlib.shake_256(f"mistake/{self.run.run_id}/{key}".encode()).digest(
                    self.settings.mistake_bytes
                )
                self._remember(self.target.put(key, body, part_size=None), body)
            what = f"{len(chosen)} objects overwritten with {self.settings.mistake_bytes} bytes each"
        else:
            acks = self.target.delete(chosen)
            self.j.events += [(a.key, None) for a in acks]
            what = f"{len(acks)} delete markers written"
        self.j.disaster_done_mono = time.monotonic()
        self.run.mark(
            EventKind.FAULT_RETURNED, f"{what}; restore point just before it: {utc_iso(self.j.disaster_at)}"
        )

    def restore(self, choice: Choice) -> None:
        """Plan and apply the restore to the chosen point, then read every object back and verify."""
        if not self._proceed("nothing restored"):
            return
        self.plan_and_apply(choice)
        self.verify()

    def plan_and_apply(self, choice: Choice) -> RestorePlan:
        point, expected = self._resolve(choice)
        started = time.monotonic()
        listing = self.target.list_versions(self.data_prefix)
        listed = time.monotonic()
        plan = plan_restore(listing, point)
        counts = ", ".join(f"{n} {k}" for k, n in plan.counts().items() if n)
        self.run.mark(
            EventKind.RESTORE_PHASE,
            f"{plan.versions_listed} versions of {plan.keys_listed} keys listed in {listed - started:.3f} s; "
            f"plan to {point.description}: {counts}",
        )
        self._check_selection(listing, point, expected)
        wrong_now = damaged(self.j.events, expected)  # the drill's own journal, before the restore writes
        undelete = [(a.key, m) for a in plan.of_kind(ActionKind.UNDELETE) for m in a.markers]
        self.target.remove_versions(undelete)
        for action in plan.of_kind(ActionKind.COPY):
            assert action.source is not None
            self.target.copy_version(action.source, part_size=self._part_size.get(action.key))
        doomed = [a.key for a in plan.of_kind(ActionKind.DELETE)]
        if doomed:
            self.target.delete(doomed)
        applied = time.monotonic()
        self.run.mark(EventKind.RESTORE_PHASE, f"restore applied in {applied - listed:.3f} s: {counts}")
        self.j.restore = RestoreRecord(
            point, expected, plan, listed - started, applied - listed, started, listed, applied
        )
        restored = sorted(a.key for a in plan.restored)
        self.run.check(
            CHECK_GROUND_TRUTH,
            restored == wrong_now,
            f"{len(restored)} restored; {len(wrong_now)} differed from the restore point by the drill's own "
            "journal of its writes and deletes"
            + self._names("not restored", sorted(set(wrong_now) - set(restored)))
            + self._names("restored but not damaged", sorted(set(restored) - set(wrong_now))),
        )
        load = VersionLoad(
            plan.versions_listed,
            len(plan.restored),
            self.objectives.versions_per_object,
            listed - started,
            applied - listed,
        )
        self.run.check(CHECK_FINDING, not load.slow, load.detail(), blocking=False)
        return plan

    def verify(self) -> Verification:
        """Read every object under the prefix back (SHA-256, size) and compare with the manifest."""
        r = self._require_restore()
        started = time.monotonic()
        present = current_state(self.target.list_versions(self.data_prefix))
        observed = {key: self.target.read(key) for key in sorted(present)}
        result = verify(r.expected, observed)
        r.verified_mono = time.monotonic()
        r.verify_s = r.verified_mono - started
        r.verification = result
        parts = sum(1 for rec in r.expected.values() if rec.parts > 1)
        self.run.check(
            CHECK_VERIFIED,
            not result.unrestored and result.expected > 0,
            f"{result.verified}/{result.expected} objects, {result.bytes_verified} bytes, SHA-256 and size "
            f"as in the manifest ({parts} uploaded in parts: their ETags are not checksums)"
            + self._names(
                "not restored",
                [
                    f"{m.key} ({m.problem}: {m.detail})"
                    for m in result.mismatches
                    if m.key in result.unrestored
                ],
            ),
        )
        born_after = len(r.plan.of_kind(ActionKind.DELETE)) + len(r.plan.of_kind(ActionKind.ABSENT))
        self.run.check(
            CHECK_ABSENT,
            not result.unexpected,
            f"{born_after} keys that did not exist at the restore point are absent"
            + self._names("present", result.unexpected),
        )
        if self.j.before is not None:
            r.loss = loss(self.j.before, r.expected, r.point)
            until = self.j.disaster_at if self.j.disaster_at is not None else math.inf
            made_after = sorted({k for k, when in self.j.writes if not r.point.holds(when) and when < until})
            self.run.check(
                CHECK_LOST,
                r.loss.keys == made_after,
                f"{len(r.loss.keys)} objects lost by restoring to {r.point.description}, "
                f"{len(made_after)} written after it (the drill's journal)"
                + self._names("lost", r.loss.keys),
            )
        self.run.mark(
            EventKind.VERIFIED, f"{result.verified}/{result.expected} objects verified in {r.verify_s:.3f} s"
        )
        self.run.mark(EventKind.RESTORE_DONE, f"restored to {r.point.description}")
        return result

    # ---- the parts --------------------------------------------------------------------------------
    def _names(self, label: str, items: list[str]) -> str:
        """Names for a check's detail, keys relative to the drill's prefix (the evidence names it)."""
        return names(label, [i.replace(self.prefix, "") for i in items] if self.prefix else items)

    def _proceed(self, skipped: str) -> bool:
        if self.ready is None:
            raise HarnessError("no backup bucket was opened by a Given step")
        if not self.ready:
            self.run.mark(EventKind.NOTE, f"{skipped}: the bucket was refused")
        return self.ready

    def _new_key(self) -> str:
        key = f"{self.data_prefix}obj-{self._next_index:05d}"
        self._next_index += 1
        return key

    def _write(self, key: str, size: int) -> None:
        generation = self._generation.get(key, 0) + 1
        self._generation[key] = generation
        body = hashlib.shake_256(f"{self.run.run_id}/{key}#{generation}".encode()).digest(size)
        self._remember(self.target.put(key, body, part_size=self._part_size.get(key)), body)

    def _remember(self, ack: WriteAck, body: bytes) -> None:
        digest = hashlib.sha256(body).hexdigest()
        self.j.records[ack.version_id] = ObjectRecord(
            ack.key, ack.version_id, digest, len(body), ack.written_at, ack.parts
        )
        self.j.writes.append((ack.key, ack.written_at))
        self.j.events.append((ack.key, digest))

    def _latest(self, key: str) -> str:
        return max(
            (r for r in self.j.records.values() if r.key == key), key=lambda r: r.written_at
        ).version_id

    def _boundary(self) -> float:
        """The next whole second at least the margin after every write so far, returned once the
        clock is the margin past it: S3 dates versions to the second, so writes before and after
        it carry different seconds whatever the sub-second skew within the margin."""
        margin = self.settings.clock_margin_s
        boundary = float(math.ceil(time.time() + margin))
        time.sleep(max(0.0, boundary + margin - time.time()))
        return boundary

    def _manifest(self, when: str) -> Manifest:
        """The manifest of the prefix now: S3's listing joined with what the drill wrote."""
        state = current_state(self.target.list_versions(self.data_prefix))
        manifest, problems = manifest_of(state, self.j.records)
        size = sum(r.size for r in manifest.values())
        parts = sum(1 for r in manifest.values() if r.parts > 1)
        self.run.check(
            f"manifest {when}",
            not problems and len(manifest) == len(self._generation),
            f"{len(manifest)} objects, {size} bytes ({parts} uploaded in parts), each listed with the "
            f"size written and hashed (SHA-256) as written" + self._names("problems", problems),
        )
        return manifest

    def _resolve(self, choice: Choice) -> tuple[RestorePoint, Manifest]:
        if choice is Choice.NOTED:
            if self._point is None or self._point_manifest is None:
                raise HarnessError("no restore point was noted before the restore")
            return self._point, self._point_manifest
        if self.j.disaster_at is None or self.j.before is None:
            raise HarnessError("no disaster happened before the restore to 'just before the mistake'")
        at = self.j.disaster_at
        return RestorePoint(
            at, inclusive=False, description=f"just before the mistake ({utc_iso(at)})"
        ), self.j.before

    def _check_selection(self, listing: list[ObjectVersion], point: RestorePoint, expected: Manifest) -> None:
        selected = {k: v.version_id for k, v in state_as_of(listing, point).items()}
        noted = {k: r.version_id for k, r in expected.items()}
        differ = sorted(k for k in set(selected) | set(noted) if selected.get(k) != noted.get(k))
        self.run.check(
            CHECK_SELECTION,
            not differ,
            f"{len(selected)} keys selected as of {utc_iso(point.at)} from {len(listing)} listed versions; "
            f"the manifest noted then has {len(noted)}" + self._names("differ", differ),
        )
        before = [r.version_id for r in self.j.records.values() if point.holds(r.written_at)]
        after = [r.version_id for r in self.j.records.values() if not point.holds(r.written_at)]
        wrong = misplaced(listing, before, after, point)
        self.run.check(
            "S3 timestamps place every write on its side of the restore point",
            not wrong,
            f"{len(before)} versions written before, {len(after)} after; LastModified is whole seconds, "
            f"writes kept {self.settings.clock_margin_s:g} s from the point"
            + self._names("misplaced", wrong),
        )

    def _require_restore(self) -> RestoreRecord:
        if self.j.restore is None:
            raise HarnessError("nothing was restored")
        return self.j.restore

    # ---- the whole drill ----------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Delete the drill's prefix: every version and delete marker it wrote. Once."""
        if self._cleaned or not self.prefix:
            return
        self._cleaned = True
        if self.ready is False:
            rows = [r for r in self.target.list_versions(self.prefix) if r.key.startswith(self.data_prefix)]
            self.run.check(
                CHECK_NO_DISASTER,
                self.run.fault is None and not rows,
                f"fault: {self.run.fault or 'none'}; {len(rows)} objects written under {self.data_prefix}",
            )
        result = self.target.delete_prefix(self.prefix)
        left = self.target.list_versions(self.prefix)
        self.run.check(
            CHECK_CLEANUP,
            result.left == 0 and not left,
            f"{result.detail}; list_object_versions under it afterwards: {len(left)} rows",
        )
        self.run.mark(EventKind.NOTE, result.detail)
        if result.interrupted:
            self._interrupted = True
            self.run.record_failure(KeyboardInterrupt("interrupted while the drill prefix was deleted"))

    def conclude(self) -> EvidenceRecord:
        """Delete the drill's prefix, measure, write evidence. Raises nothing but a Ctrl-C that came
        while the prefix was being deleted, once the evidence is written."""
        if self.run.evidence is not None:
            return self.run.evidence
        try:
            self.cleanup()
        except HarnessError as exc:
            self.run.check(CHECK_CLEANUP, False, str(exc).splitlines()[0] if str(exc) else "failed")
            self.run.record_failure(exc)
        except KeyboardInterrupt:  # the bucket's teardown deletes what is left of the prefix
            self._interrupted = True
            self.run.record_failure(KeyboardInterrupt("interrupted while the drill prefix was deleted"))
        measurements, values = measure(self.j, self.objectives.versions_per_object)
        record = self.run.finish(measurements, values)
        if self._interrupted:  # the evidence is written: now the Ctrl-C goes on stopping the run
            raise KeyboardInterrupt
        return record
