"""Drills under a background load, on real PostgreSQL and Redis processes: the ground truth of the
load's loss count, Redis under load, knobs put back, and a bad step parameter as one line (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from firedrill.drills.base import DrillRun, Objectives
from firedrill.drills.calibration_trials import route_standby_through
from firedrill.drills.failover import FailoverDrill, FailoverSettings
from firedrill.drills.load import BackgroundLoad
from firedrill.drills.service import ServiceProbe
from firedrill.faults.proxy import CutMode, FaultProxy
from firedrill.load import pg as load_pg
from firedrill.load.accounting import acknowledged_writes
from firedrill.load.generator import LoadSpec
from firedrill.probes import ProbeConfig
from firedrill.run_context import RunContext
from firedrill.staging.common import wait_until
from firedrill.staging.postgres import PgStaging, PgStagingConfig
from firedrill.staging.reference_app import ReferenceApp
from firedrill.targets.base import FaultKind, FaultSpec
from firedrill.targets.knobs import set_redis_knobs
from firedrill.targets.load_binding import bind_load
from firedrill.targets.local_postgres import LocalPostgresTarget
from firedrill.targets.local_redis import open_local_redis
from tests.fixtures.processes import own_servers

FAST = FailoverSettings(baseline_s=0.5, settle_s=0.5, steady_timeout_s=20, recovery_timeout_s=30)


def _run(tmp_path: Path, scenario: str) -> DrillRun:
    return DrillRun(
        drill="failover",
        scenario=scenario,
        ctx=RunContext(environment="local", via="test", out_root=tmp_path),
        objectives=Objectives(),
        probe_config=ProbeConfig(rate_hz=50),
    )


def _standby_seqs(staging: PgStaging, run_id: str) -> frozenset[int]:
    with staging.connect(staging.standby) as conn:
        try:
            rows = conn.execute(load_pg.SELECT_RUN, (run_id,)).fetchall()
        except psycopg.errors.UndefinedTable:
            return frozenset()
    return frozenset(int(r[0]) for r in rows)  # type: ignore[call-overload]


def test_the_load_loss_count_is_exactly_the_writes_acknowledged_behind_a_cut_replication_link(
    tmp_path: Path,
) -> None:
    """Ground truth: the standby streams WAL through a fault proxy. With the load paused, everything
    acknowledged so far is proven on the standby; the link is blackholed; the load runs 0.4 s (each
    write it gets acknowledged now is on the primary alone: the truth); paused again, the primary is
    SIGKILLed, the held WAL dropped with the proxy, the standby promoted, the load resumed through
    recovery. The drill must report exactly those sequence numbers as lost."""
    with PgStaging(PgStagingConfig(sync_replication=False)) as staging:
        target = LocalPostgresTarget(staging)
        run = _run(tmp_path, "ground truth: load writes behind a cut replication link")
        spec = LoadSpec(writers=4, rate_per_s=1000)
        load = BackgroundLoad(bind_load(target, run.run_id, spec), spec)
        run.traffic.append(load)
        drill = FailoverDrill(target, run, FAST)
        with FaultProxy(("127.0.0.1", staging.primary.port), name="replication") as proxy:
            route_standby_through(staging, proxy)
            drill.establish_steady_state()  # starts the load, then the canary
            gen = load.generator
            assert gen is not None and gen.pause()
            before = set(acknowledged_writes(gen.samples()))
            assert len(before) > 200
            wait_until(
                "acknowledged load writes replayed on the standby",
                lambda: before <= _standby_seqs(staging, run.run_id),
                timeout_s=10,
                interval_s=0.02,
            )
            proxy.begin_cut(CutMode.BLACKHOLE)
            gen.resume()
            time.sleep(0.4)
            assert gen.pause()
            truth = set(acknowledged_writes(gen.samples())) - before
            assert len(truth) > 100
            assert not truth & _standby_seqs(staging, run.run_id), "the cut leaked"
            drill.inject(FaultSpec(FaultKind.KILL))
        gen.resume()  # the load writes on through the outage and finds the promoted standby
        drill.promote()
        record = drill.conclude()
    assert record.load is not None and record.load.verified
    assert record.load.lost_seqs == sorted(truth)
    assert record.load.lost_writes == len(truth)
    assert record.load.failed_writes > 0  # the outage showed in the load too
    assert [p.name for p in record.load.phases] == ["before", "during", "after"]


def test_redis_under_load_fails_over_and_every_acknowledged_write_is_accounted(tmp_path: Path) -> None:
    with open_local_redis() as target:
        restore = set_redis_knobs(target, min_replicas_to_write=1)
        master = target.staging.current_master()
        assert target.staging.client(master).config_get("min-replicas-to-write") == {
            "min-replicas-to-write": "1"
        }
        run = _run(tmp_path, "redis under load")
        spec = LoadSpec(writers=4, rate_per_s=1000, read_share=0.2, row_bytes=256)
        run.traffic.append(BackgroundLoad(bind_load(target, run.run_id, spec), spec))
        drill = FailoverDrill(target, run, FAST)
        drill.inject(FaultSpec(FaultKind.KILL))
        drill.promote()
        record = drill.conclude()
        assert "min-replicas-to-write 0" in restore()
        for node in target.staging.nodes:
            got = target.staging.client(node).config_get("min-replicas-to-write")
            assert got == {"min-replicas-to-write": "0"}, node.name
    load = record.load
    assert record.error is None, record.error
    assert load is not None and load.store == "redis" and load.verified
    assert load.lost_writes is not None and load.acknowledged_writes > 500
    assert (
        load.reads_ok > 100 and load.achieved_per_s > 0.5 * load.requested_per_s
    )  # shared CPU: not "reached"
    during = next(p for p in load.phases if p.name == "during")
    assert during.failed > 0 and load.recovered_s is not None
    assert (tmp_path / record.run_id / "report.html").read_text().count('id="background-load"') == 1


def test_a_bad_load_parameter_is_one_line_and_exit_2(tmp_path: Path) -> None:
    feature = tmp_path / "bad.feature"
    feature.write_text(
        "@local\nFeature: bad load\n  Scenario: too many writers\n"
        "    Given a PostgreSQL primary with a streaming standby in the drill environment\n"
        "    And a background load of 500 writers at 2000 writes per second\n"
        "    When the primary is killed\n    Then writes succeed again within 15 minutes\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "firedrill.cli.main", "run", str(feature)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["firedrill: background load: 500 writers is outside 1..64"] or (
        len(lines) == 1 and "500 writers is outside 1..64" in lines[0]
    ), proc.stderr


@pytest.fixture(autouse=True)
def _nothing_left_running() -> object:
    yield None
    left = own_servers("firedrill-pg-|firedrill-redis-|reference_app/app.py")
    assert not left, left


def test_the_service_is_never_back_before_the_store_it_writes_to(tmp_path: Path) -> None:
    """Ground truth by construction: the reference application writes to the store, so it cannot
    acknowledge a write before the store accepts one again. Measured with the same clock and rules,
    service RTO >= store RTO, and the difference is named after what the service answered."""
    with (
        PgStaging() as staging,
        ReferenceApp(pg_conninfo=LocalPostgresTarget(staging).endpoint().conninfo()) as app,
    ):
        target = LocalPostgresTarget(staging)
        run = _run(tmp_path, "service vs store")
        run.traffic.append(ServiceProbe(app.url, ProbeConfig(rate_hz=100), store="pg"))
        drill = FailoverDrill(target, run, FAST)
        drill.inject(FaultSpec(FaultKind.KILL))
        drill.promote()
        record = drill.conclude()
    service, store_rto = record.service, record.measurements.rto_s
    assert record.error is None, record.error
    assert service is not None and service.rto_s is not None and store_rto is not None
    assert service.store_rto_s == pytest.approx(store_rto, abs=1e-6)
    assert service.rto_s >= store_rto
    assert service.gap_s is not None and service.gap_s >= 0
    assert service.failed > 0 and service.lost_writes == 0 and service.verified
    assert any(
        c.name == "the service recovered no earlier than the store" and c.passed for c in record.checks
    )
    assert any(e.kind == "note" and e.detail.startswith("service back") for e in record.timeline)
    assert app.pid is None  # stopped


def test_the_service_probe_works_against_the_url_a_profile_names(tmp_path: Path) -> None:
    with (
        PgStaging() as staging,
        ReferenceApp(pg_conninfo=LocalPostgresTarget(staging).endpoint().conninfo()) as app,
    ):
        (tmp_path / "firedrill.toml").write_text(
            f'[profiles.mine]\nservice = {{ url = "{app.url}", rate_hz = 20 }}\n'
        )
        (tmp_path / "svc.feature").write_text(
            "@local\nFeature: my service\n  Scenario: crash behind my service\n"
            "    Given a PostgreSQL primary with a streaming standby in the drill environment\n"
            "    And service probes through the application at the profile's URL\n"
            "    When the primary is killed\n    And the standby is promoted\n"
            "    Then writes succeed again within 15 minutes\n"
        )
        proc = subprocess.run(
            [sys.executable, "-m", "firedrill.cli.main", "run", "svc.feature", "--env", "mine"],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=tmp_path,
        )
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-2000:]
    (evidence,) = tmp_path.glob("reports/out/*/evidence.json")
    record = json.loads(evidence.read_text())
    # the app fronts another staging than the drill's, so it never sees an outage: a valid result
    assert record["service"]["url"] == app.url and record["service"]["acknowledged"] > 10
    assert record["service"]["verified"] is True and record["service"]["lost_writes"] == 0
