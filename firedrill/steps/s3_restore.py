"""Steps of the S3 restore drill: one call into drills/s3_restore.py each.

The fixtures live here: `s3_buckets`, the buckets of the drill environment for one feature module
(the local moto staging, or the AWS profile's bucket once its guardrails passed), and
`s3_objectives`, what the scenario's Then steps promise, read before its first step runs. The
scenario's drill is the shared `holder`'s, so its evidence is written (and the drill's prefix deleted)
at teardown whatever happened, Ctrl-C included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import replace

import pytest
from pytest_bdd import given, parsers, then, when

from firedrill.config import Profile
from firedrill.drills.base import DrillRun
from firedrill.drills.s3_restore import (
    CHECK_ABSENT,
    CHECK_CLEANUP,
    CHECK_FINDING,
    CHECK_GROUND_TRUTH,
    CHECK_LOST,
    CHECK_NO_DISASTER,
    CHECK_SELECTION,
    CHECK_VERIFIED,
    Choice,
    Disaster,
    Refusal,
    S3Objectives,
    S3RestoreDrill,
    refused_name,
)
from firedrill.errors import ConfigError
from firedrill.evidence import EvidenceRecord
from firedrill.steps.holder import SCENARIO, DrillHolder
from firedrill.steps.objectives import seconds
from firedrill.targets.factory import open_bucket_target
from firedrill.targets.s3_base import BucketTarget
from firedrill.targets.s3_bucket import S3Environment

_UNITS = {"bytes": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
UNITS = "|".join(_UNITS)
_DURATION = r"(?P<amount>\d+(?:\.\d+)?) (?P<unit>seconds?|minutes?)"
S3_RTO = re.compile(rf"the objects are restored and verified within {_DURATION}")
S3_RPO = re.compile(rf"at most {_DURATION} of object writes before the mistake (?:are|is) lost")
S3_REFUSED = re.compile(
    r"the drill refuses the bucket because "
    r"(?P<why>versioning is not enabled|noncurrent versions expire too early|replication is not healthy)"
)
S3_FINDING = re.compile(
    r"a slow restore is reported as a finding "
    r"when more than (?P<n>\d+) versions are listed per restored object"
)
S3_TIMESTAMPS = "S3 timestamps place every write on its side of the restore point"


def size_bytes(amount: str, unit: str) -> int:
    """('256', 'KiB') -> 262144."""
    return int(amount) * _UNITS[unit]


def s3_objectives_from_steps(texts: Iterable[str], base: S3Objectives) -> S3Objectives:
    result = base
    for text in texts:
        if m := S3_RTO.fullmatch(text):
            result = replace(result, rto_s=seconds(m["amount"], m["unit"]))
        elif m := S3_RPO.fullmatch(text):
            result = replace(result, rpo_s=seconds(m["amount"], m["unit"]))
        elif m := S3_REFUSED.fullmatch(text):
            result = replace(result, expect_refusal=Refusal(m["why"]))
        elif m := S3_FINDING.fullmatch(text):
            result = replace(result, versions_per_object=float(m["n"]))
    return result


@pytest.fixture(scope="module")
def s3_buckets(profile: Profile) -> Iterator[S3Environment]:
    if profile.kind == "aws" and (profile.aws is None or profile.aws.s3 is None):
        pytest.skip(f"needs a [profiles.{profile.name}.aws.s3] section (bucket, prefix)")
    with open_bucket_target(profile) as buckets:
        yield buckets


@pytest.fixture
def s3_objectives(request: pytest.FixtureRequest, profile: Profile) -> S3Objectives:
    _, texts = request.node.stash.get(SCENARIO, (request.node.name, []))
    base = S3Objectives(rto_s=profile.objectives.rto_s, rpo_s=profile.objectives.rpo_s)
    return s3_objectives_from_steps(texts, base)


def _start(holder: DrillHolder, target: BucketTarget, objectives: S3Objectives) -> S3RestoreDrill:
    run = DrillRun(drill="s3-restore", scenario=holder.scenario, ctx=holder.ctx, objectives=objectives)
    drill = S3RestoreDrill(target, run)
    holder.drill = drill
    return drill


def _drill(holder: DrillHolder) -> S3RestoreDrill:
    if not isinstance(holder.drill, S3RestoreDrill):
        pytest.fail("no backup bucket was set up by a Given step")
    return holder.drill


def _record(holder: DrillHolder) -> EvidenceRecord:
    """The evidence, for a Then step; a drill error fails every Then step, naming it."""
    record = _drill(holder).conclude()
    if record.error:
        raise AssertionError(f"drill error: {record.error} (evidence: {_drill(holder).run.evidence_path})")
    return record


def _assert_checks(holder: DrillHolder, *names: str) -> EvidenceRecord:
    record = _record(holder)
    where = _drill(holder).run.evidence_path
    by_name = {c.name: c for c in record.checks}
    for name in names:
        check = by_name.get(name)
        assert check is not None, f"check {name!r} was not made ({where})"
        assert check.passed, f"{name}: {check.detail} ({where})"
    return record


# ---- Given ------------------------------------------------------------------------------------------
@given("a versioned backup bucket in the drill environment")
def s3_versioned_bucket(holder: DrillHolder, s3_buckets: S3Environment, s3_objectives: S3Objectives) -> None:
    """Opens the backup bucket (local: moto's S3; AWS: the profile's, after its guardrails), claims the
    drill's own prefix in it and checks versioning, noncurrent-version retention and replication."""
    _start(holder, s3_buckets.backup, s3_objectives).open()


@given("a backup bucket without versioning in the drill environment")
def s3_unversioned_bucket(
    holder: DrillHolder, s3_buckets: S3Environment, s3_objectives: S3Objectives
) -> None:
    """Opens a bucket without versioning (local staging only) and checks it like a backup bucket."""
    if s3_buckets.unversioned is None:
        raise ConfigError("a bucket without versioning exists on the local staging only")
    _start(holder, s3_buckets.unversioned, s3_objectives).open()


_OBJECTS = rf"(?P<count>\d+) objects? of (?P<size>\d+) (?P<unit>{UNITS})"


@given(parsers.re(rf"{_OBJECTS} under the drill prefix"))
def s3_objects(holder: DrillHolder, count: str, size: str, unit: str) -> None:
    """Writes N objects of known content (each one PUT) under the drill's own prefix."""
    _drill(holder).write_objects(int(count), size_bytes(size, unit))


@given(
    parsers.re(rf"{_OBJECTS} uploaded in (?P<part>\d+) (?P<part_unit>{UNITS}) parts under the drill prefix")
)
def s3_multipart_objects(
    holder: DrillHolder, count: str, size: str, unit: str, part: str, part_unit: str
) -> None:
    """Writes N objects of known content in parts of the part size (multipart upload, 5 MiB or more)."""
    part_size = size_bytes(part, part_unit)
    _drill(holder).write_objects(int(count), size_bytes(size, unit), part_size=part_size)


@given(parsers.re(rf"{_OBJECTS}, each written (?P<times>\d+) times, under the drill prefix"))
def s3_versioned_objects(holder: DrillHolder, count: str, size: str, unit: str, times: str) -> None:
    """Writes N objects, each several times with new content: one version per write, the last current."""
    _drill(holder).write_objects(int(count), size_bytes(size, unit), times=int(times))


# ---- When -------------------------------------------------------------------------------------------
@when(parsers.parse("{count:d} objects are deleted by mistake"))
def s3_delete(holder: DrillHolder, count: int) -> None:
    """The disaster: a plain delete of N objects (on a versioned bucket: a delete marker on each)."""
    _drill(holder).disaster(Disaster.DELETE, count)


@when(parsers.parse("{count:d} objects are overwritten by mistake"))
def s3_overwrite(holder: DrillHolder, count: int) -> None:
    """The disaster: N objects overwritten with a small wrong object."""
    _drill(holder).disaster(Disaster.OVERWRITE, count)


@when("every object under the drill prefix is deleted by mistake")
def s3_wipe(holder: DrillHolder) -> None:
    """The disaster: the whole prefix wiped (a delete marker on every object in it)."""
    _drill(holder).disaster(Disaster.WIPE)


@when("a restore point is noted")
def s3_note_point(holder: DrillHolder) -> None:
    """Notes a restore point (a second boundary) and the manifest of the prefix at that moment."""
    _drill(holder).note_point()


@when(
    parsers.parse(
        "{new:d} new objects are written and {changed:d} objects are overwritten after the restore point"
    )
)
def s3_write_after_point(holder: DrillHolder, new: int, changed: int) -> None:
    """Legitimate writes after the noted point, which a restore to the point does not bring back."""
    _drill(holder).write_after_point(new, changed)


@when(parsers.re(r"the objects are restored to (?P<choice>just before the mistake|the noted restore point)"))
def s3_restore(holder: DrillHolder, choice: str) -> None:
    """Restores every object from its versions to the point, then reads each back and verifies it."""
    _drill(holder).restore(Choice(choice))


# ---- Then -------------------------------------------------------------------------------------------
@then("every object has the checksum and size it had at the restore point")
def s3_verified(holder: DrillHolder) -> None:
    """Every object's SHA-256 and size match the manifest at the restore point, and nothing else is there."""
    _assert_checks(holder, CHECK_VERIFIED, CHECK_ABSENT, CHECK_SELECTION, S3_TIMESTAMPS)


@then(parsers.parse("exactly the {count:d} damaged objects are restored"))
def s3_exactly_restored(holder: DrillHolder, count: int) -> None:
    """Ground truth: the restore changed exactly the N objects the drill itself damaged, no other."""
    record = _assert_checks(holder, CHECK_GROUND_TRUTH)
    restored = record.measurements.extra.get("objects_restored")
    assert restored == count, f"{restored} objects restored, {count} were damaged"


@then(parsers.re(S3_RTO.pattern))
def s3_rto(holder: DrillHolder) -> None:
    """RTO: from the mistake to the last object read back and verified."""
    holder.assert_met("rto")


@then(parsers.re(S3_RPO.pattern))
def s3_rpo(holder: DrillHolder) -> None:
    """RPO: the newest write before the mistake that the restore does not bring back, after the point."""
    holder.assert_met("rpo")


@then(parsers.parse("the {count:d} objects written after the restore point are reported lost, by name"))
def s3_lost(holder: DrillHolder, count: int) -> None:
    """The writes between the restore point and the mistake are counted exactly and named as lost."""
    record = _assert_checks(holder, CHECK_LOST)
    m = record.measurements
    assert m.lost_writes == count, f"{m.lost_writes} objects reported lost, expected {count}"
    named = str(m.extra.get("objects_lost", ""))
    assert len([n for n in named.split(", ") if n and n != "none"]) == count, named


@then(parsers.re(S3_FINDING.pattern))
def s3_slow_finding(holder: DrillHolder, n: str) -> None:
    """A restore that lists more versions per restored object than this is a finding (not a breach)."""
    record = _record(holder)
    check = next((c for c in record.checks if c.name == CHECK_FINDING), None)
    assert check is not None, "the version count of the restore was not checked"
    assert not check.passed and not check.blocking, f"no finding: {check.detail}"
    assert record.verdict == "passed", f"verdict {record.verdict}: the finding must not fail the drill"


@then("the drill prefix is deleted with every version and delete marker in it")
def s3_prefix_deleted(holder: DrillHolder) -> None:
    """The drill's prefix is gone: no version and no delete marker is listed under it any more."""
    _assert_checks(holder, CHECK_CLEANUP)
    drill = _drill(holder)
    left = drill.target.list_versions(drill.prefix) if drill.prefix else []
    assert not left, f"{len(left)} versions still listed under {drill.prefix}"


@then(parsers.re(S3_REFUSED.pattern))
def s3_refused(holder: DrillHolder, why: str) -> None:
    """The bucket failed that readiness check, and the drill refused it before any fault."""
    record = _assert_checks(holder, refused_name(Refusal(why)))
    assert record.verdict == "passed", f"verdict {record.verdict} ({_drill(holder).run.evidence_path})"


@then("no disaster is injected")
def s3_no_disaster(holder: DrillHolder) -> None:
    """Nothing was deleted or overwritten in a refused bucket (no fault, no object written)."""
    record = _assert_checks(holder, CHECK_NO_DISASTER)
    assert record.fault is None, f"a fault was injected: {record.fault}"
