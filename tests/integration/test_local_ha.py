"""The failover drill on the local HA staging (3 etcd, 3 Patroni/PostgreSQL, HAProxy), end to end:
`firedrill run failover --env local-ha` runs every @local_ha scenario on one staging, and Patroni,
not firedrill, promotes. Then the evidence is held to the configured timers (ttl 20 s, loop_wait 1 s),
and `firedrill staging down` sweeps an HA staging whose firedrill was SIGKILLed.

Needs etcd, haproxy and the Patroni venv (scripts/setup.sh installs them as root).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from firedrill.staging.etcd import find_etcd
from firedrill.staging.haproxy import find_haproxy
from firedrill.staging.patroni import WORKDIR_PREFIX, find_patroni

FIREDRILL = [sys.executable, "-m", "firedrill.cli.main"]
TTL, LOOP_WAIT = 20.0, 1.0


def _ha_tools_missing() -> str | None:
    for find in (find_etcd, find_haproxy, find_patroni):
        try:
            find()
        except Exception as exc:
            return str(exc)
    return None


if os.environ.get("FIREDRILL_WITH_BROWSER") != "1" and (reason := _ha_tools_missing()):
    pytest.skip(reason, allow_module_level=True)  # under `make test` a missing tool fails instead


def _ha_processes(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


@pytest.fixture(scope="module")
def drill_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """One `firedrill run failover --env local-ha`: one HA staging for every @local_ha scenario."""
    work = tmp_path_factory.mktemp("local-ha")
    proc = subprocess.run(
        [*FIREDRILL, "run", "failover", "--env", "local-ha"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    records = {}
    for path in sorted((work / "reports" / "out").glob("*/evidence.json")):
        record = json.loads(path.read_text())
        records[record["scenario"]] = record | {"_dir": str(path.parent)}
    return proc, records


def _record(records: dict[str, Any], words: str) -> dict[str, Any]:
    found = [r for name, r in records.items() if words in name]
    assert len(found) == 1, f"{words!r} in {sorted(records)}"
    return found[0]


def _phases(record: dict[str, Any]) -> dict[str, float]:
    return {p["name"]: p["duration_s"] for p in record["measurements"]["phases"]}


def _check(record: dict[str, Any], words: str) -> dict[str, Any]:
    found = [c for c in record["checks"] if words in c["name"]]
    assert found, f"no check {words!r}: {[c['name'] for c in record['checks']]}"
    return found[0]


def test_every_ha_scenario_passes_and_only_those_run(drill_run: tuple[Any, dict[str, Any]]) -> None:
    proc, records = drill_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "5/5 scenarios passed" in proc.stdout
    assert len(records) == 5  # the @local and @aws scenarios were skipped, not run
    assert not _ha_processes(WORKDIR_PREFIX), "the HA staging was not torn down"


def test_a_lost_primary_node_is_detected_after_the_leader_ttl_and_promoted_by_patroni(
    drill_run: tuple[Any, dict[str, Any]],
) -> None:
    record = _record(drill_run[1], "primary node is lost")
    settings = record["environment"]["settings"]
    assert (settings["ttl"], settings["loop_wait"], settings["retry_timeout"]) == ("20", "1", "3")
    assert "maximum_lag_on_failover" in settings and settings["synchronous_mode"] == "true"
    phases = _phases(record)
    assert {"detection", "election", "promotion"} <= set(phases), phases
    # Ground truth: the key was renewed at most one loop before the kill and lives ttl seconds.
    assert TTL - LOOP_WAIT - 1 <= phases["detection"] <= TTL + LOOP_WAIT + 1, phases
    assert phases["election"] < 5 and phases["promotion"] < 5, phases
    assert _check(record, "ground truth")["passed"]
    events = {e["kind"]: e["detail"] for e in record["timeline"]}
    assert events["promotion_started"] == "waiting for the platform"  # firedrill promoted nothing
    assert record["measurements"]["lost_writes"] == 0
    assert TTL - LOOP_WAIT - 1 <= record["measurements"]["rto_s"] <= TTL + 10


def test_a_frozen_primary_is_replaced_and_rejoins_as_a_replica(drill_run: tuple[Any, dict[str, Any]]) -> None:
    record = _record(drill_run[1], "hangs past the leader TTL")
    assert record["verdict"] == "passed"
    assert _check(record, "rejoined as a replica")["passed"]
    assert TTL - LOOP_WAIT - 1 <= _phases(record)["detection"] <= TTL + LOOP_WAIT + 1
    assert _check(record, "failed node after the fault is lost")["passed"]  # no split brain


def test_without_etcd_quorum_nobody_is_promoted(drill_run: tuple[Any, dict[str, Any]]) -> None:
    record = _record(drill_run[1], "etcd loses its quorum")
    check = _check(record, "no node promoted while etcd had no quorum")
    assert check["passed"] and "unchanged" in check["detail"], check
    kinds = [e["kind"] for e in record["timeline"]]
    issued, cleared = kinds.index("fault_issued"), kinds.index("fault_cleared")
    assert "new_primary" not in kinds[issued:cleared] and "leader_elected" not in kinds[issued:cleared]
    assert record["measurements"]["recovered"]  # and it recovers once quorum is back


def test_a_switchover_is_measured_from_its_request(drill_run: tuple[Any, dict[str, Any]]) -> None:
    record = _record(drill_run[1], "switchover")
    phases = _phases(record)
    assert "handover" in phases or "handover + election" in phases, phases
    assert _check(record, "between the switchover request and its answer")["passed"]
    assert record["measurements"]["rto_s"] < 15


def test_a_client_side_network_cut_is_not_a_failover(drill_run: tuple[Any, dict[str, Any]]) -> None:
    record = _record(drill_run[1], "network between the application")
    assert record["measurements"]["extra"]["ha_failover_seen"] is False
    assert 2.0 <= record["measurements"]["rto_s"] < 5


def test_the_report_shows_the_patroni_settings_beside_the_phases(
    drill_run: tuple[Any, dict[str, Any]],
) -> None:
    record = _record(drill_run[1], "primary node is lost")
    html = (Path(record["_dir"]) / "report.html").read_text()
    assert "HA manager settings (Patroni)" in html and "detection vs leader TTL" in html
    assert "<code>loop_wait</code>" in html


def test_staging_down_sweeps_an_ha_staging_whose_firedrill_was_killed() -> None:
    proc = subprocess.Popen(
        [*FIREDRILL, "staging", "up", "--ha"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    text = "".join(lines)
    workdir = next(p for p in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*") if str(p) in text)
    assert ":5432" not in text and "HAProxy" in text
    proc.send_signal(signal.SIGKILL)  # no teardown at all
    proc.wait(timeout=10)
    assert _ha_processes(str(workdir)), "nothing was running to sweep"
    down = subprocess.run([*FIREDRILL, "staging", "down"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert f"removing {workdir}" in down.stdout
    time.sleep(0.5)
    assert not workdir.exists()
    assert not _ha_processes(str(workdir)), _ha_processes(str(workdir))
