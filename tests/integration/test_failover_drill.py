"""The failover drill end to end on real PostgreSQL processes (no mocks)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from firedrill.drills.base import DrillRun, Objectives
from firedrill.drills.failover import FailoverDrill, FailoverSettings
from firedrill.probes import ProbeConfig
from firedrill.run_context import RunContext
from firedrill.staging.common import pid_alive
from firedrill.staging.postgres import PgStaging
from firedrill.targets.base import FaultKind, FaultSpec
from firedrill.targets.local_postgres import LocalPostgresTarget

FAST = FailoverSettings(baseline_s=0.5, settle_s=0.3, steady_timeout_s=15, recovery_timeout_s=30)


@pytest.fixture(scope="module")
def staging() -> Iterator[PgStaging]:
    with PgStaging() as s:
        yield s


def _drill(
    staging: PgStaging, tmp_path: Path, scenario: str, settings: FailoverSettings = FAST
) -> FailoverDrill:
    run = DrillRun(
        drill="failover",
        scenario=scenario,
        ctx=RunContext(environment="local", via="test", out_root=tmp_path),
        objectives=Objectives(max_lost_writes=0),
        probe_config=ProbeConfig(rate_hz=100),
    )
    return FailoverDrill(LocalPostgresTarget(staging), run, settings)


def test_kill_promote_measures_rto_on_the_standby_and_loses_nothing(
    staging: PgStaging, tmp_path: Path
) -> None:
    standby = staging.standby.address
    old_primary = staging.primary.address
    drill = _drill(staging, tmp_path, "kill")
    drill.inject(FaultSpec(FaultKind.KILL))
    drill.promote()
    record = drill.conclude()
    m = record.measurements
    assert record.verdict == "passed", record.error
    assert m.recovered and m.recovered_node == standby != old_primary
    assert m.rto_s is not None and 0 < m.rto_s < 30
    assert m.lost_writes == 0 and m.acknowledged_writes and m.acknowledged_writes > 50
    promotion = [p for p in m.phases if p.name == "promotion"]
    assert promotion and promotion[0].duration_s > 0
    # evidence on disk is the same record, and the reports exist next to it
    assert drill.run.evidence_path is not None
    on_disk = json.loads(drill.run.evidence_path.read_text())
    assert on_disk["run_id"] == record.run_id and on_disk["verdict"] == "passed"
    assert (drill.run.evidence_path.parent / "report.html").is_file()
    assert (drill.run.evidence_path.parent / "report.md").is_file()
    # topology restored: the old primary streams from the new one again
    assert staging.primary.address == standby and staging.standby.address == old_primary
    staging.wait_steady(max_lag_s=1, timeout_s=10)


def test_freeze_outage_is_at_least_the_freeze(staging: PgStaging, tmp_path: Path) -> None:
    primary = staging.primary.address
    drill = _drill(staging, tmp_path, "freeze")
    drill.inject(FaultSpec(FaultKind.FREEZE, duration_s=1.0))
    record = drill.conclude()
    m = record.measurements
    assert record.verdict == "passed", record.error
    assert m.recovered_node == primary
    assert m.outage_seen is True
    # Ground truth: the server could not answer for 1.0 s, and the probe runs at 100 Hz.
    assert m.rto_s is not None and 1.0 <= m.rto_s < 1.0 + 0.5
    assert m.failed_writes and m.failed_writes >= 1


def test_no_fault_is_injected_when_steady_state_does_not_hold(staging: PgStaging, tmp_path: Path) -> None:
    standby = staging.standby
    staging.stop_graceful(standby)
    try:
        settings = FailoverSettings(baseline_s=0.2, steady_timeout_s=1.0)
        drill = _drill(staging, tmp_path, "not steady", settings)
        with pytest.raises(Exception, match="steady state not reached"):
            drill.inject(FaultSpec(FaultKind.KILL))
        drill.run.record_failure(RuntimeError("steady state not reached"))
        record = drill.conclude()
        assert record.verdict == "error"
        assert not [e for e in record.timeline if e.kind == "fault_issued"]
        assert drill.run.evidence_path is not None and drill.run.evidence_path.is_file()
        assert pid_alive(staging.primary.postmaster_pid() or -1)  # the primary was left alone
    finally:
        staging.restore_topology(timeout_s=30)
    staging.wait_steady(max_lag_s=1, timeout_s=10)


def test_failed_promotion_is_recorded_and_topology_still_restored(staging: PgStaging, tmp_path: Path) -> None:
    drill = _drill(staging, tmp_path, "standby lost too")
    drill.inject(FaultSpec(FaultKind.KILL))
    staging.kill(staging.standby)  # a second failure: nothing left to promote
    record = drill.conclude()
    assert record.verdict in ("error", "aborted")
    assert record.error
    assert drill.run.evidence_path is not None and drill.run.evidence_path.is_file()
    assert record.measurements.recovered is False


def test_stop_leaves_no_process_and_no_directory(tmp_path: Path) -> None:
    s = PgStaging()
    s.start()
    pids = [n.postmaster_pid() for n in s.nodes]
    workdir = s.workdir
    s.freeze(s.primary)  # teardown must cope with a frozen node
    s.stop()
    assert all(p is not None and not pid_alive(p) for p in pids)
    assert workdir is not None and not workdir.exists()
