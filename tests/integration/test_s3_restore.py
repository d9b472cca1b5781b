"""The S3 restore drill on the local staging: moto's S3 in server mode, a real HTTP server on loopback
(no mocks). Each disaster, a restore to a noted point, the refusal of a bucket without versioning, a
deliberately wrong restore caught by verification, and the cleanup: nothing is left under the drill's
prefix, on success, failure or interrupt, and nothing outside it is touched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firedrill.config import Profile
from firedrill.drills.base import DrillRun
from firedrill.drills.s3_restore import (
    CHECK_CLEANUP,
    CHECK_GROUND_TRUTH,
    CHECK_LOST,
    CHECK_NO_DISASTER,
    CHECK_VERIFIED,
    CHECK_VERSIONING,
    Choice,
    Disaster,
    Refusal,
    S3Objectives,
    S3RestoreDrill,
    refused_name,
)
from firedrill.errors import GuardrailError
from firedrill.object_versions import ActionKind, current_state, history
from firedrill.run_context import RunContext
from firedrill.targets.s3_bucket import S3BucketTarget, S3Environment, open_s3_environment

KIB, MIB = 1024, 1024 * 1024


@pytest.fixture(scope="module")
def buckets() -> Iterator[S3Environment]:
    with open_s3_environment(Profile(name="local")) as env:
        yield env


@pytest.fixture
def backup(buckets: S3Environment) -> Iterator[S3BucketTarget]:
    before = _outside(buckets)
    yield buckets.backup
    assert _outside(buckets) == before, "an object outside the drill's prefix changed"
    assert buckets.backup.claimed() == [], "a drill prefix was left claimed"


def _outside(env: S3Environment) -> list[tuple[Any, ...]]:
    """Every version and delete marker of the bucket outside the drill prefixes, as S3 lists them."""
    s3, bucket = env.backup.s3, env.backup.bucket
    page = s3.list_object_versions(Bucket=bucket)
    rows = [(r["Key"], r["VersionId"], r["LastModified"], r.get("ETag")) for r in page.get("Versions", [])]
    rows += [(r["Key"], r["VersionId"], r["LastModified"], "marker") for r in page.get("DeleteMarkers", [])]
    return sorted(r for r in rows if "/firedrill-drill/" not in r[0])


def _drill(target: S3BucketTarget, tmp_path: Path, scenario: str, **objectives: Any) -> S3RestoreDrill:
    run = DrillRun(
        drill="s3-restore",
        scenario=scenario,
        ctx=RunContext(environment="local", via="test", out_root=tmp_path / "out"),
        objectives=S3Objectives(**objectives),
    )
    drill = S3RestoreDrill(target, run)
    drill.open()
    return drill


def _prefix_is_empty(target: S3BucketTarget, prefix: str) -> None:
    raw = target.s3.list_object_versions(Bucket=target.bucket, Prefix=prefix)
    assert not raw.get("Versions") and not raw.get("DeleteMarkers"), raw
    uploads = target.s3.list_multipart_uploads(Bucket=target.bucket, Prefix=prefix)
    assert not uploads.get("Uploads"), uploads


def _checks(record: Any) -> dict[str, Any]:
    return {c.name: c for c in record.checks}


def _failed(record: Any) -> list[Any]:
    return [c for c in record.checks if not c.passed]


@pytest.mark.parametrize(
    ("kind", "count", "restored", "action"),
    [
        (Disaster.DELETE, 4, 4, ActionKind.UNDELETE),
        (Disaster.OVERWRITE, 3, 3, ActionKind.COPY),
        (Disaster.WIPE, None, 13, ActionKind.UNDELETE),
    ],
)
def test_each_disaster_is_restored_to_just_before_it_and_verified(
    backup: S3BucketTarget,
    tmp_path: Path,
    kind: Disaster,
    count: int | None,
    restored: int,
    action: ActionKind,
) -> None:
    drill = _drill(backup, tmp_path, kind.value)
    drill.write_objects(12, 64 * KIB)
    drill.write_objects(1, 11 * MIB, part_size=5 * MIB)  # the last key: multipart, spread() picks it
    listing = backup.list_versions(drill.data_prefix)
    etags = {v.key: v.etag for v in listing}
    multipart = [k for k, e in etags.items() if e.endswith("-3")]
    assert len(multipart) == 1, etags  # 11 MiB in 5 MiB parts: 3 parts, an ETag that is no MD5
    drill.disaster(kind, count)
    plan = drill.plan_and_apply(Choice.BEFORE_DISASTER)
    assert multipart[0] in {a.key for a in plan.restored}  # the multipart object is among the damaged
    assert {a.kind for a in plan.restored} == {action}
    drill.verify()
    record = drill.conclude()
    assert record.verdict == "passed", (record.error, _failed(record))
    x, m = record.measurements.extra, record.measurements
    assert x["objects_restored"] == restored == x["objects_damaged"]
    assert _checks(record)[CHECK_GROUND_TRUTH].passed
    assert x["objects_verified"] == x["objects_in_manifest"] == 13
    assert m.lost_writes == 0 and m.lost_seqs == [] and m.rpo_window_s == 0.0
    assert m.rto_s is not None and 0 < m.rto_s < 30
    assert [p.name for p in m.phases] == [
        "disaster",
        "list versions",
        "restore",
        "verify (read back, SHA-256)",
    ]
    assert record.fault == kind.value
    assert _checks(record)[CHECK_CLEANUP].passed
    _prefix_is_empty(backup, drill.prefix)
    assert drill.run.evidence_path is not None and (drill.run.evidence_path.parent / "report.html").is_file()
    assert 'id="s3-objects"' in (drill.run.evidence_path.parent / "report.html").read_text()


def test_a_restore_to_a_noted_point_loses_the_later_writes_and_hides_new_keys(
    backup: S3BucketTarget, tmp_path: Path
) -> None:
    drill = _drill(backup, tmp_path, "noted point")
    drill.write_objects(10, 32 * KIB)
    point = drill.note_point()
    drill.write_after_point(new=2, overwritten=2)
    drill.disaster(Disaster.DELETE, 3)
    plan = drill.plan_and_apply(Choice.NOTED)
    hidden = [a.key for a in plan.of_kind(ActionKind.DELETE)]
    drill.verify()
    record = drill.conclude()
    assert record.verdict == "passed", (record.error, _failed(record))
    m, x = record.measurements, record.measurements.extra
    assert m.lost_writes == 4 and x["objects_lost_count"] == 4  # 2 new + 2 overwritten after the point
    assert _checks(record)[CHECK_LOST].passed
    assert len(str(x["objects_lost"]).split(", ")) == 4
    assert m.rpo_window_s is not None and 0 < m.rpo_window_s < 30
    newest = max(when for _, when in drill.j.writes if point.at <= when < (drill.j.disaster_at or 0))
    assert m.rpo_window_s == pytest.approx(newest - point.at, abs=1e-3)
    assert hidden, "a key born after the point and still there must be hidden by the restore"
    assert x["objects_unexpected"] == "none"  # ... and it is absent after the restore
    _prefix_is_empty(backup, drill.prefix)


def test_a_restore_to_the_wrong_version_is_caught_by_verification(
    backup: S3BucketTarget, tmp_path: Path
) -> None:
    drill = _drill(backup, tmp_path, "wrong restore")
    drill.write_objects(6, 16 * KIB)
    drill.disaster(Disaster.OVERWRITE, 2)
    plan = drill.plan_and_apply(Choice.BEFORE_DISASTER)
    victim = plan.restored[0].key
    # Put the mistaken version back over one restored object: same key, wrong version.
    rows = history(backup.list_versions(drill.data_prefix))[victim]
    mistaken = rows[1]  # newest first: the restored copy, then the mistake, then the original
    assert mistaken.size == drill.settings.mistake_bytes
    backup.copy_version(mistaken, part_size=None)
    result = drill.verify()
    record = drill.conclude()
    assert result.unrestored == [victim]
    check = _checks(record)[CHECK_VERIFIED]
    assert not check.passed and check.blocking
    assert victim.removeprefix(drill.prefix) in check.detail and "checksum" in check.detail
    assert record.verdict == "failed"
    assert record.measurements.lost_writes == 1
    assert record.measurements.lost_seqs == [int(victim[-5:])]
    _prefix_is_empty(backup, drill.prefix)


def test_a_bucket_without_versioning_is_refused_and_nothing_is_written(
    buckets: S3Environment, tmp_path: Path
) -> None:
    target = buckets.unversioned
    assert target is not None
    drill = _drill(target, tmp_path, "refusal", expect_refusal=Refusal.VERSIONING)
    drill.write_objects(5, 8 * KIB)
    drill.disaster(Disaster.DELETE, 2)
    drill.restore(Choice.BEFORE_DISASTER)
    record = drill.conclude()
    checks = _checks(record)
    assert record.verdict == "passed", (record.error, _failed(record))
    assert checks[refused_name(Refusal.VERSIONING)].passed
    assert not checks[CHECK_VERSIONING].passed and not checks[CHECK_VERSIONING].blocking
    assert checks[CHECK_NO_DISASTER].passed and record.fault is None
    assert record.objectives == [] and record.verdicts == []
    _prefix_is_empty(target, drill.prefix)


def test_an_unexpected_refusal_fails_the_drill_without_a_disaster(
    buckets: S3Environment, tmp_path: Path
) -> None:
    target = buckets.unversioned
    assert target is not None
    drill = _drill(target, tmp_path, "not ready")
    drill.disaster(Disaster.WIPE)
    drill.restore(Choice.BEFORE_DISASTER)
    record = drill.conclude()
    assert record.verdict == "failed" and record.fault is None
    assert _checks(record)[CHECK_VERSIONING].blocking
    assert {v.objective for v in record.verdicts if not v.met} == {"rto", "rpo"}  # nothing was measured


def test_an_interrupt_mid_write_still_deletes_the_prefix(
    backup: S3BucketTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drill = _drill(backup, tmp_path, "interrupted")
    # Ctrl-C arrives while a multipart upload is in flight: raised from its third part upload (a
    # timer signal was tried first, and a loaded machine let the writes race past it).
    real_upload_part = backup.s3.upload_part
    parts = 0

    def upload_part(**kwargs: Any) -> Any:
        nonlocal parts
        parts += 1
        if parts == 3:
            raise KeyboardInterrupt
        return real_upload_part(**kwargs)

    monkeypatch.setattr(backup.s3, "upload_part", upload_part)
    with pytest.raises(KeyboardInterrupt):
        drill.write_objects(400, 6 * MIB, part_size=5 * MIB)  # multipart: an upload is in flight
    monkeypatch.undo()
    assert current_state(backup.list_versions(drill.data_prefix)), "the interrupt came before any write"
    drill.run.record_failure(KeyboardInterrupt())
    record = drill.conclude()
    assert record.verdict == "aborted"
    assert _checks(record)[CHECK_CLEANUP].passed
    _prefix_is_empty(backup, drill.prefix)  # no version, no delete marker, no incomplete upload


def test_the_adapter_refuses_keys_outside_the_drills_prefix(backup: S3BucketTarget, tmp_path: Path) -> None:
    drill = _drill(backup, tmp_path, "guard")
    outside = "backups/platform/db-2026-12-01.dump"
    with pytest.raises(GuardrailError, match="outside the drill's own prefix"):
        backup.put(outside, b"x", part_size=None)
    with pytest.raises(GuardrailError, match="outside the drill's own prefix"):
        backup.delete([outside])
    with pytest.raises(GuardrailError, match="not a prefix this drill claimed"):
        backup.delete_prefix("backups/")
    drill.write_objects(1, KIB)
    with pytest.raises(GuardrailError, match="already holds objects"):
        backup.claim_prefix(drill.run.run_id)  # a prefix with anything in it is never the drill's
    drill.conclude()
    _prefix_is_empty(backup, drill.prefix)


def test_a_ctrl_c_while_the_prefix_is_deleted_does_not_stop_the_deletion(
    backup: S3BucketTarget, tmp_path: Path
) -> None:
    drill = _drill(backup, tmp_path, "interrupted cleanup")
    drill.write_objects(5, 4 * KIB)
    drill.disaster(Disaster.DELETE, 2)
    fired: list[str] = []

    def ctrl_c(**_: Any) -> None:  # on the real client, just before its first DeleteObjects request
        if not fired:
            fired.append("DeleteObjects")
            raise KeyboardInterrupt

    backup.s3.meta.events.register("before-call.s3.DeleteObjects", ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt):
            drill.conclude()  # the Ctrl-C goes on once the prefix is gone and the evidence written
    finally:
        backup.s3.meta.events.unregister("before-call.s3.DeleteObjects", ctrl_c)
    assert fired
    record = drill.conclude()  # written once, returned again
    assert record.verdict == "aborted"
    cleanup = _checks(record)[CHECK_CLEANUP]
    assert cleanup.passed and "Ctrl-C" in cleanup.detail
    _prefix_is_empty(backup, drill.prefix)
