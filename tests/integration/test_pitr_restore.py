"""Point-in-time restore on real PostgreSQL processes (no mocks): the staging's restore machinery,
the local RestoreTarget's refusals, and the PITR drill's evidence when things go wrong."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from firedrill.config import Profile
from firedrill.drills.base import DrillRun
from firedrill.drills.pitr import PitrDrill, PitrObjectives, PitrSettings, TargetChoice
from firedrill.errors import StagingError, TargetError
from firedrill.probes import ProbeConfig
from firedrill.run_context import RunContext
from firedrill.staging import pg_restore
from firedrill.staging.common import pid_alive
from firedrill.targets.local_pitr import LocalPitrTarget, open_local_pitr
from firedrill.targets.restore_base import DisasterKind, RecoveryTarget, RefusalReason, RestoreRefused

FAST = PitrSettings(baseline_s=0.3, settle_s=0.3, restore_timeout_s=60)
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z")


@pytest.fixture(scope="module")
def target() -> Iterator[LocalPitrTarget]:
    with open_local_pitr(Profile(name="local")) as t:
        yield t


def _drill(target: LocalPitrTarget, tmp_path: Path, scenario: str, **objectives: object) -> PitrDrill:
    run = DrillRun(
        drill="pitr",
        scenario=scenario,
        ctx=RunContext(environment="local", via="test", out_root=tmp_path),
        objectives=PitrObjectives(**objectives),  # type: ignore[arg-type]
        probe_config=ProbeConfig(rate_hz=100),
    )
    return PitrDrill(target, run, FAST)


def _no_restored_server_left(target: LocalPitrTarget) -> None:
    assert target.live_restores() == []
    restores = target._staging.workdir / "restores"  # type: ignore[operator]
    assert not restores.exists() or list(restores.iterdir()) == []


def test_restore_before_the_disaster_then_a_second_restore_stays_on_timeline_2(
    target: LocalPitrTarget, tmp_path: Path
) -> None:
    drill = _drill(target, tmp_path, "drop table")
    drill.prepare_app_data("ledger", 2000)
    before = target.app_data_state("ledger")
    drill.disaster(DisasterKind.DROP_TABLE, "ledger")
    drill.restore(TargetChoice.BEFORE_DISASTER)
    record = drill.conclude()
    assert record.verdict == "passed", (record.error, [c for c in record.checks if not c.passed])
    x = record.measurements.extra
    assert x["app_rows_restored"] == before.rows == 2000
    assert x["app_md5_restored"] == before.checksum
    assert x["restored_timeline"] == 2
    assert isinstance(x["canary_after_target"], int) and x["canary_after_target"] > 0
    assert x["canary_after_target_restored"] == 0
    assert [p.name for p in record.measurements.phases] == ["copy", "WAL replay", "promotion", "verification"]
    assert record.measurements.rto_s is not None
    assert record.measurements.rto_s == pytest.approx(
        sum(p.duration_s for p in record.measurements.phases), abs=0.05
    )
    assert drill.run.evidence_path is not None and drill.run.evidence_path.is_file()
    assert (drill.run.evidence_path.parent / "report.html").is_file()
    _no_restored_server_left(target)

    # The restored server did not archive, so the next restore is again on timeline 2, not 3.
    again = _drill(target, tmp_path, "again")
    again.prepare_app_data("ledger", 10)
    again.disaster(DisasterKind.DELETE_ALL, "ledger")
    again.restore(TargetChoice.BEFORE_DISASTER)
    second = again.conclude()
    assert second.verdict == "passed", second.error
    assert second.measurements.extra["restored_timeline"] == 2
    assert second.measurements.extra["app_rows_restored"] == 10
    assert not list(target._staging.archive_dir.glob("*.history"))


def test_refusals_name_the_target_and_the_bound(target: LocalPitrTarget) -> None:
    window = target.restore_window()
    backup = window.newest_backup
    with pytest.raises(RestoreRefused) as before:
        target.restore_to(RecoveryTarget.at_time(backup.end_time - 60), timeout_s=30)
    assert before.value.reason is RefusalReason.BEFORE_BACKUP
    assert "is before the backup end time" in str(before.value)
    assert len(ISO.findall(str(before.value))) == 2

    with pytest.raises(RestoreRefused) as beyond:
        target.restore_to(RecoveryTarget.at_time(window.latest_time + 60), timeout_s=30)
    assert beyond.value.reason is RefusalReason.BEYOND_ARCHIVE
    assert "after the end of the archived WAL" in str(beyond.value)
    assert len(ISO.findall(str(beyond.value))) == 2

    with pytest.raises(RestoreRefused) as lsn:
        target.restore_to(RecoveryTarget.before_lsn("0/1000000", backup.start_time), timeout_s=30)
    assert lsn.value.reason is RefusalReason.BEFORE_BACKUP
    assert f"before the backup end LSN {backup.end_lsn}" in str(lsn.value)

    with pytest.raises(RestoreRefused) as xid:
        target.restore_to(RecoveryTarget.before_xid(3_000_000, window.latest_time), timeout_s=30)
    assert "transaction 3000000 has no commit timestamp" in str(xid.value)
    _no_restored_server_left(target)


def test_the_server_refusing_an_unreachable_target_is_reported_and_cleaned_up(
    target: LocalPitrTarget,
) -> None:
    """Past the firedrill's own check: PostgreSQL itself stops, and the half-made server is removed."""
    staging = target._staging
    archived = pg_restore.archive_wal(staging)
    backup = target._backups[-1]
    far = pg_restore.lsn_to_int(archived.lsn) + (1 << 32)  # 4 GB of WAL that was never written
    lsn = f"{far >> 32:X}/{far & 0xFFFFFFFF:X}"
    with pytest.raises(StagingError, match="recovery ended before configured recovery target was reached"):
        pg_restore.restore(staging, backup, "unreachable", {"recovery_target_lsn": f"'{lsn}'"}, timeout_s=30)
    assert not (staging.workdir / "restores" / "unreachable").exists()  # type: ignore[operator]


def test_a_restore_that_fails_leaves_error_evidence_and_no_server(
    target: LocalPitrTarget, tmp_path: Path
) -> None:
    drill = _drill(target, tmp_path, "archive lost a segment")
    drill.prepare_app_data("ledger", 100)
    drill.disaster(DisasterKind.DELETE_ALL, "ledger")
    # Lose the archived segment holding the disaster: recovery cannot reach its target.
    window = target.restore_window()
    lost = target._staging.archive_dir / pg_restore_segment(target, window.latest_lsn or "")
    moved = lost.with_suffix(".hidden")
    lost.rename(moved)
    try:
        with pytest.raises(TargetError, match="did not start") as failed:
            drill.restore(TargetChoice.BEFORE_DISASTER)
        drill.run.record_failure(failed.value)  # what the step glue does
    finally:
        moved.rename(lost)
    record = drill.conclude()
    assert record.verdict == "error"
    assert record.measurements.rto_s is None
    assert [v.measured for v in record.verdicts if v.objective == "rto"] == [None]
    on_disk = json.loads(drill.run.evidence_path.read_text())  # type: ignore[union-attr]
    assert on_disk["verdict"] == "error"
    _no_restored_server_left(target)
    for node in target._staging.nodes:  # the source is untouched
        assert node.postmaster_pid() is not None and pid_alive(node.postmaster_pid() or 0)


def test_a_stale_base_backup_is_a_finding(target: LocalPitrTarget, tmp_path: Path) -> None:
    drill = _drill(target, tmp_path, "stale backup", backup_max_age_s=0.001)
    drill.check_backup()
    record = drill.conclude()
    age = next(v for v in record.verdicts if v.objective == "backup_age")
    assert not age.met and age.measured is not None and age.measured > 0.001
    assert record.verdict == "failed"
    assert record.error is None


def test_canary_commit_timestamps_match_the_restored_rows(target: LocalPitrTarget, tmp_path: Path) -> None:
    """The restored server keeps the source's commit timestamps (what the RPO is computed from)."""
    drill = _drill(target, tmp_path, "commit timestamps")
    drill.prepare_app_data("ledger", 50)
    drill.disaster(DisasterKind.DROP_TABLE, "ledger")
    recovery = RecoveryTarget.before_xid(drill._disaster.xid or 0, drill._disaster.commit_time)  # type: ignore[union-attr]
    handle = target.restore_to(recovery, timeout_s=60)
    try:
        source = dict(target.canary_commits(drill.run.run_id))
        with psycopg.connect(handle.endpoint.conninfo(read_write=False), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT seq, extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM firedrill_canary "
                "WHERE run_id = %s",
                (drill.run.run_id,),
            ).fetchall()
        assert rows
        for seq, when in rows:
            assert float(when) == pytest.approx(source[int(seq)], abs=1e-6)
        newest = target.restored_newest_commit(handle)
        assert newest is not None and newest < drill._disaster.commit_time  # type: ignore[union-attr]
    finally:
        target.drop_restored(handle)
        drill.conclude()
    _no_restored_server_left(target)


def pg_restore_segment(target: LocalPitrTarget, lsn: str) -> str:
    """The archived segment that holds the WAL just before `lsn` (a pg_switch_wal() result)."""
    with target._staging.connect(target._staging.primary) as conn:
        row = conn.execute("SELECT pg_walfile_name(%s::pg_lsn)", (lsn,)).fetchone()
    assert row is not None
    return str(row[0])
