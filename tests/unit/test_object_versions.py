"""Version selection, restore planning and verification of the S3 restore drill, on synthetic listings.

No server: firedrill.object_versions and the readiness rules of firedrill.targets.s3_base are pure.
Times are small integers (S3 dates versions to the whole second).
"""

from __future__ import annotations

import hashlib

import pytest

from firedrill.object_versions import (
    ActionKind,
    ObjectRecord,
    ObjectVersion,
    ObservedObject,
    Problem,
    RestorePoint,
    VersionLoad,
    current_state,
    damaged,
    history,
    key_index,
    loss,
    manifest_of,
    misplaced,
    plan_restore,
    state_as_of,
    verify,
    version_as_of,
)
from firedrill.report.run_report import render_html
from firedrill.targets.s3_base import (
    drill_prefix,
    parse_lifecycle,
    parse_replication,
    replication_check,
    retention_check,
)
from tests.fixtures.evidence_factory import make_record


def v(key: str, vid: str, t: float, *, latest: bool = False, size: int = 10) -> ObjectVersion:
    return ObjectVersion(key, vid, float(t), latest, size=size)


def dm(key: str, vid: str, t: float, *, latest: bool = False) -> ObjectVersion:
    return ObjectVersion(key, vid, float(t), latest, delete_marker=True)


def rec(key: str, vid: str, content: str, t: float = 0.0) -> ObjectRecord:
    body = content.encode()
    return ObjectRecord(key, vid, hashlib.sha256(body).hexdigest(), len(body), t)


def seen(record: ObjectRecord, *, sha: str | None = None, size: int | None = None) -> ObservedObject:
    return ObservedObject(record.key, sha or record.sha256, record.size if size is None else size)


# ---- version selection -----------------------------------------------------------------------------
def test_the_version_at_a_point_is_the_newest_before_it() -> None:
    rows = history([v("a", "1", 10), v("a", "3", 30, latest=True), v("a", "2", 20)])["a"]
    assert [r.version_id for r in rows] == ["3", "2", "1"]
    assert version_as_of(rows, RestorePoint(25)).version_id == "2"
    assert version_as_of(rows, RestorePoint(5)) is None  # the key did not exist yet


def test_a_version_at_exactly_the_restore_time_belongs_only_to_an_inclusive_point() -> None:
    rows = [v("a", "2", 20, latest=True), v("a", "1", 10)]
    assert version_as_of(rows, RestorePoint(20, inclusive=True)).version_id == "2"
    assert version_as_of(rows, RestorePoint(20, inclusive=False)).version_id == "1"


def test_a_key_with_only_delete_markers_did_not_exist() -> None:
    rows = [dm("a", "m2", 20, latest=True), dm("a", "m1", 10)]
    assert version_as_of(rows, RestorePoint(30)) is None
    plan = plan_restore(rows, RestorePoint(30))
    assert [(a.key, a.kind) for a in plan.actions] == [("a", ActionKind.ABSENT)]
    assert plan.restored == []


def test_a_key_deleted_before_the_point_stays_deleted() -> None:
    rows = [dm("a", "m", 20, latest=True), v("a", "1", 10)]
    assert state_as_of(rows, RestorePoint(25)) == {}
    assert plan_restore(rows, RestorePoint(25)).actions[0].kind is ActionKind.ABSENT


def test_same_second_rows_put_the_latest_first() -> None:
    """ListObjectVersions gives versions and delete markers in two lists: IsLatest orders a tie."""
    rows = history([v("a", "1", 10), dm("a", "m", 10, latest=True)])["a"]
    assert [r.version_id for r in rows] == ["m", "1"]


# ---- the plan --------------------------------------------------------------------------------------
def test_deleted_objects_are_undeleted_by_removing_the_markers_written_after_the_point() -> None:
    rows = [v("a", "1", 10), dm("a", "m1", 30), dm("a", "m2", 31, latest=True), v("b", "b1", 10, latest=True)]
    plan = plan_restore(rows, RestorePoint(20))
    by_key = {a.key: a for a in plan.actions}
    assert by_key["a"].kind is ActionKind.UNDELETE and by_key["a"].markers == ("m2", "m1")
    assert by_key["a"].source is not None and by_key["a"].source.version_id == "1"
    assert by_key["b"].kind is ActionKind.KEEP
    assert [a.key for a in plan.restored] == ["a"]
    assert plan.versions_listed == 4 and plan.keys_listed == 2


def test_an_object_overwritten_twice_is_copied_back_from_its_version_at_the_point() -> None:
    rows = [v("a", "3", 40, latest=True), v("a", "2", 30), v("a", "1", 10)]
    (action,) = plan_restore(rows, RestorePoint(20)).actions
    assert action.kind is ActionKind.COPY
    assert action.source is not None and action.source.version_id == "1"
    assert action.current is not None and action.current.version_id == "3"


def test_overwritten_then_deleted_is_copied_back_not_undeleted() -> None:
    rows = [dm("a", "m", 40, latest=True), v("a", "2", 30), v("a", "1", 10)]
    assert plan_restore(rows, RestorePoint(20)).actions[0].kind is ActionKind.COPY


def test_a_key_created_after_the_point_is_deleted() -> None:
    rows = [v("new", "n1", 30, latest=True), v("old", "o1", 10, latest=True)]
    plan = plan_restore(rows, RestorePoint(20))
    assert {a.key: a.kind for a in plan.actions} == {"new": ActionKind.DELETE, "old": ActionKind.KEEP}


def test_an_empty_prefix_plans_nothing() -> None:
    plan = plan_restore([], RestorePoint(20))
    assert plan.actions == () and plan.restored == [] and plan.versions_listed == 0
    assert state_as_of([], RestorePoint(20)) == {}
    assert verify({}, {}).ok


def test_plan_counts_every_kind() -> None:
    rows = [v("k", "1", 10, latest=True), v("c", "2", 30, latest=True), v("c", "1", 10)]
    assert plan_restore(rows, RestorePoint(20)).counts() == {
        "keep": 1,
        "undelete": 0,
        "copy": 1,
        "delete": 0,
        "absent": 0,
    }


# ---- manifests and verification --------------------------------------------------------------------
def test_the_manifest_joins_the_listing_with_what_was_written() -> None:
    written = {"1": rec("a", "1", "hello"), "2": rec("b", "2", "world")}
    state = current_state([v("a", "1", 10, latest=True, size=5), v("b", "2", 10, latest=True, size=9)])
    manifest, problems = manifest_of(state, written)
    assert set(manifest) == {"a", "b"}
    assert problems == ["b: S3 lists 9 bytes, 5 were written"]
    _, problems = manifest_of(current_state([v("c", "x", 1, latest=True)]), written)
    assert problems == ["c: version x was not written by the drill"]


def test_verification_passes_when_every_object_has_its_checksum_and_size() -> None:
    expected = {r.key: r for r in (rec("a", "1", "alpha"), rec("b", "2", "beta"))}
    result = verify(expected, {k: seen(r) for k, r in expected.items()})
    assert result.ok and result.verified == 2 and result.bytes_verified == 9


def test_a_restore_to_the_wrong_version_is_caught() -> None:
    """One object restored to the wrong version: same key, same size, other content."""
    right, wrong = rec("a", "1", "version-1"), rec("a", "2", "version-2")
    ok = rec("b", "3", "fine")
    result = verify({"a": right, "b": ok}, {"a": seen(wrong), "b": seen(ok)})
    assert not result.ok
    assert result.unrestored == ["a"] and result.verified == 1
    assert [m.problem for m in result.mismatches] == [Problem.CHECKSUM]


def test_verification_names_missing_resized_and_unexpected_objects() -> None:
    a, b = rec("a", "1", "aaaa"), rec("b", "2", "bbbb")
    extra = rec("z", "9", "born after the point")
    result = verify({"a": a, "b": b}, {"b": seen(b, size=3), "z": seen(extra)})
    assert result.keys(Problem.MISSING) == ["a"]
    assert result.keys(Problem.SIZE) == ["b"]
    assert result.unexpected == ["z"]
    assert result.unrestored == ["a", "b"]


# ---- what the restore point costs ------------------------------------------------------------------
def test_nothing_is_lost_when_the_point_is_just_before_the_disaster() -> None:
    state = {r.key: r for r in (rec("a", "1", "x", 5), rec("b", "2", "y", 6))}
    result = loss(state, state, RestorePoint(10))
    assert result.lost == () and result.window_s == 0.0


def test_writes_after_the_point_are_lost_and_the_window_ends_at_the_newest() -> None:
    at_point = {"a": rec("a", "1", "a1", 5), "gone": rec("gone", "g", "g", 5)}
    before = {"a": rec("a", "2", "a2", 12.5), "new": rec("new", "n", "n", 14.25)}
    result = loss(before, at_point, RestorePoint(10))
    assert result.keys == ["a", "new"]
    assert result.window_s == pytest.approx(4.25)
    assert result.resurrected == ("gone",)


def test_a_rewrite_with_identical_content_is_not_lost() -> None:
    before = {"a": rec("a", "2", "same", 12)}
    assert loss(before, {"a": rec("a", "1", "same", 5)}, RestorePoint(10)).lost == ()


def test_damaged_is_read_from_the_drills_own_journal() -> None:
    expected = {"a": rec("a", "1", "a"), "b": rec("b", "2", "b"), "c": rec("c", "3", "c")}
    events: list[tuple[str, str | None]] = [
        ("a", expected["a"].sha256),
        ("b", expected["b"].sha256),
        ("c", expected["c"].sha256),
        ("new", "deadbeef"),  # born after the point: must go
        ("b", None),  # deleted by mistake
        ("c", "0000"),  # overwritten by mistake ...
        ("tmp", "1111"),
        ("tmp", None),  # ... born and gone again after the point: nothing to do
    ]
    assert damaged(events, expected) == ["b", "c", "new"]


def test_misplaced_names_versions_on_the_wrong_side_of_the_point() -> None:
    listed = [v("a", "1", 9), v("a", "2", 10), v("b", "3", 10)]
    point = RestorePoint(10)
    assert misplaced(listed, ["1"], ["2", "3"], point) == []
    assert misplaced(listed, ["1", "2"], ["3"], point) == ["a@2"]  # written before, dated after


def test_version_load_attributes_the_time_and_flags_many_versions_per_object() -> None:
    slow = VersionLoad(versions_listed=364, restored=4, threshold=10, list_s=0.3, restore_s=0.1)
    assert slow.slow and slow.per_object == 91
    assert "91.0 per object (threshold 10)" in slow.detail() and "(75%)" in slow.detail()
    assert not VersionLoad(50, 8, 10, 0.1, 0.1).slow
    assert VersionLoad(5, 0, 10, 0.0, 0.0).per_object == 5


def test_key_index_numbers_the_drills_objects() -> None:
    assert key_index("x/firedrill-drill/run/data/obj-00042") == 42
    assert key_index("x/probe/replication") is None


# ---- readiness rules (firedrill.targets.s3_base) ---------------------------------------------------
def test_drill_prefix_sits_under_the_backups_prefix() -> None:
    assert drill_prefix("backups/", "r1") == "backups/firedrill-drill/r1/"
    assert drill_prefix("", "r1") == "firedrill-drill/r1/"


def _rule(rule_id: str, prefix: str, days: int | None, *, enabled: bool = True, legacy: bool = False) -> dict:
    raw: dict = {"ID": rule_id, "Status": "Enabled" if enabled else "Disabled"}
    if legacy:
        raw["Prefix"] = prefix
    else:
        raw["Filter"] = {"Prefix": prefix}
    if days is not None:
        raw["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
    return raw


PREFIX = "backups/firedrill-drill/r1/"


def test_retention_passes_when_every_rule_keeps_noncurrent_versions_long_enough() -> None:
    rules = parse_lifecycle([_rule("keep", "backups/", 35), _rule("abort", "", None)])
    ok, detail = retention_check(rules, PREFIX, 30)
    assert ok and "keep (prefix 'backups/'): NoncurrentDays 35" in detail


def test_a_rule_expiring_noncurrent_versions_earlier_for_the_prefix_fails() -> None:
    rules = parse_lifecycle(
        [_rule("keep", "backups/", 35), _rule("short", "backups/firedrill", 7, legacy=True)]
    )
    ok, detail = retention_check(rules, PREFIX, 30)
    assert not ok and "short" in detail and "NoncurrentDays 7" in detail


def test_rules_elsewhere_or_disabled_do_not_count() -> None:
    rules = parse_lifecycle([_rule("logs", "logs/", 1), _rule("off", "", 1, enabled=False)])
    ok, detail = retention_check(rules, PREFIX, 30)
    assert ok and "kept indefinitely" in detail and "1 disabled rule(s) ignored" in detail


def test_a_rule_filtered_by_tags_under_the_prefix_still_counts() -> None:
    raw = [{"ID": "t", "Status": "Enabled", "Filter": {"And": {"Prefix": "backups/", "Tags": []}},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 3}}]  # fmt: skip
    ok, detail = retention_check(parse_lifecycle(raw), PREFIX, 30)
    assert not ok and "Tags" in detail


def test_replication_needs_a_covering_rule_and_a_probe_that_did_not_fail() -> None:
    config = {"Rules": [{"ID": "r", "Status": "Enabled", "Filter": {"Prefix": "backups/"},
                         "Destination": {"Bucket": "arn:aws:s3:::replica"}}]}  # fmt: skip
    rules = parse_replication(config)
    assert replication_check(rules, PREFIX, "COMPLETED")[0]
    assert replication_check(rules, PREFIX, "PENDING")[0]
    ok, detail = replication_check(rules, PREFIX, "FAILED")
    assert not ok and "ReplicationStatus=FAILED" in detail
    assert not replication_check(rules, PREFIX, None)[0]
    assert not replication_check(None, PREFIX, None)[0]
    ok, detail = replication_check(
        parse_replication({"Rules": [{**config["Rules"][0], "Filter": {"Prefix": "logs/"}}]}),
        PREFIX,
        "COMPLETED",
    )
    assert not ok and "no enabled replication rule covers" in detail


# ---- the report's S3 section -----------------------------------------------------------------------
def test_the_report_shows_the_s3_section_only_for_the_s3_drill() -> None:
    other = make_record()
    assert 'id="s3-objects"' not in render_html(other)
    extra = {
        "bucket": "b",
        "drill_prefix": "backups/firedrill-drill/r/",
        "objects_in_manifest": 3,
        "bytes_in_manifest": 30,
        "multipart_objects": 1,
        "objects_damaged": 1,
        "disaster_after": "2025-03-14T09:30:04.000Z",
        "objects_restored": 1,
        "objects_verified": 3,
        "objects_unrestored": "none",
        "objects_lost": "data/obj-00002",
        "objects_lost_count": 1,
    }
    mine = make_record(
        drill="s3-restore", measurements=other.measurements.model_copy(update={"extra": extra})
    )
    html = render_html(mine)
    assert 'id="s3-objects"' in html and "data/obj-00002" in html
