"""Drilling a Patroni cluster firedrill did not start (`kind = "patroni"`): the local HA staging is
started here as if someone else ran it, and firedrill only gets its REST URLs, a DSN (HAProxy), a
password reference and host commands as argument lists (tests/integration/patroni_node_ctl.py plays
ssh + systemctl). Plan first (a dry run that changes nothing), then the @patroni scenarios.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from firedrill.staging.common import pids_naming
from firedrill.staging.patroni import PatroniStaging, PatroniStagingConfig
from firedrill.targets.lease import Holder
from firedrill.targets.lease_stores import PgLockRow
from firedrill.targets.pg_canary import PgEndpoint
from tests.fixtures.leases import assert_a_dead_holders_lease_expires
from tests.integration.test_local_ha import _ha_tools_missing

FIREDRILL = [sys.executable, "-m", "firedrill.cli.main"]
CTL = [sys.executable, str(Path(__file__).with_name("patroni_node_ctl.py"))]
SECRET = "not-a-real-password-7f3a"

if os.environ.get("FIREDRILL_WITH_BROWSER") != "1" and (reason := _ha_tools_missing()):
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def theirs() -> Iterator[PatroniStaging]:
    staging = PatroniStaging(PatroniStagingConfig(scope="orders-staging"))
    try:
        staging.start()
        yield staging
    finally:
        workdir = staging.workdir
        staging.stop()
        if workdir is not None:  # a Patroni that start_command started is not the staging's own
            for pid in pids_naming(f"{workdir}/"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _toml(staging: PatroniStaging, *, scopes: str = '["orders-staging"]') -> str:
    assert staging.workdir is not None
    rest = ", ".join(f'"{n.rest_url}"' for n in staging.nodes)
    host, port = staging.endpoint_address.rsplit(":", 1)
    ctl = ", ".join(f'"{a}"' for a in [*CTL, str(staging.workdir), "{node}"])
    return f"""
[profiles.theirs]
kind = "patroni"
[profiles.theirs.patroni]
rest_urls = [{rest}]
dsn = "host={host} port={port} dbname=firedrill user=firedrill"
password = {{ env = "THEIR_PG_PASSWORD" }}
allowed_scopes = {scopes}
kill_command = [{ctl}, "kill"]
start_command = [{ctl}, "start"]
"""


def _firedrill(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "THEIR_PG_PASSWORD": SECRET}
    return subprocess.run([*FIREDRILL, *args], cwd=work, capture_output=True, text=True, env=env, timeout=600)


def test_plan_lists_every_rest_call_and_command_and_changes_nothing(
    theirs: PatroniStaging, tmp_path: Path
) -> None:
    (tmp_path / "firedrill.toml").write_text(_toml(theirs))
    leader = theirs.leader().name
    proc = _firedrill(tmp_path, "plan", "failover", "--env", "theirs")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Patroni scope 'orders-staging' is in allowed_scopes" in out
    assert "[rest] POST <leader>/switchover" in out and "[command] kill" in out and "[command] start" in out
    assert "patroni_node_ctl.py" in out and "{node}" in out
    assert "faults possible here: kill, network-cut, switchover" in out
    assert SECRET not in out
    assert theirs.leader().name == leader  # a dry run


def test_a_scope_not_allowed_is_refused_in_one_line(theirs: PatroniStaging, tmp_path: Path) -> None:
    (tmp_path / "firedrill.toml").write_text(_toml(theirs, scopes='["billing-staging"]'))
    proc = _firedrill(tmp_path, "run", "failover", "--env", "theirs", "-k", "switchover")
    assert proc.returncode == 2
    assert (
        "refusing Patroni cluster 'orders-staging': not in allowed_scopes (billing-staging)"
        in proc.stdout + proc.stderr
    )


def test_the_patroni_scenarios_pass_against_someone_elses_cluster(
    theirs: PatroniStaging, tmp_path: Path
) -> None:
    (tmp_path / "firedrill.toml").write_text(_toml(theirs))
    proc = _firedrill(tmp_path, "run", "failover", "--env", "theirs")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3/3 scenarios passed" in proc.stdout, proc.stdout[-2000:]
    evidence = list((tmp_path / "reports" / "out").glob("*/evidence.json"))
    assert len(evidence) == 3
    for path in evidence:
        for name in ("evidence.json", "report.html", "report.md"):
            text = (path.parent / name).read_text()
            assert SECRET not in text, f"the password leaked into {path.parent / name}"
        assert '"password": "env:THEIR_PG_PASSWORD"' in path.read_text()
    kill = next(p for p in evidence if "primary node is lost" in p.read_text())
    assert json.loads(kill.read_text())["environment"]["kind"] == "patroni"
    assert "ground truth" in kill.read_text() and "patroni_node_ctl.py" in kill.read_text()
    # And the cluster is whole again (asked over REST: the killed node runs a Patroni that
    # start_command started, which the staging object does not know).
    view = theirs.cluster()
    assert len(view.members) == 3 and view.leader is not None and view.leader.state == "running"
    assert all(m.state == "streaming" for m in view.replicas()), view


def test_a_second_drill_is_refused_naming_the_holder_until_its_lease_expires(
    theirs: PatroniStaging, tmp_path: Path
) -> None:
    (tmp_path / "firedrill.toml").write_text(_toml(theirs))
    host, port = theirs.endpoint_address.rsplit(":", 1)
    endpoint = PgEndpoint(hosts=((host, int(port)),), dbname="firedrill", user="firedrill")
    lease = PgLockRow(
        endpoint.connect, "patroni:orders-staging", "Patroni cluster 'orders-staging'", ttl_s=60
    )
    other = Holder("alice", "ops-1", 4242, "20261202T150000Z-failover-abc123", "2026-12-02T15:00:00Z")
    lease.acquire(other)  # another drill, on another host, holds the cluster (and then dies)
    try:
        proc = _firedrill(tmp_path, "run", "failover", "--env", "theirs", "-k", "switchover")
        assert proc.returncode == 2, proc.stdout[-2000:]
        assert (
            "Patroni cluster 'orders-staging' is being drilled by alice@ops-1 (pid 4242, run "
            "20261202T150000Z-failover-abc123, since 2026-12-02T15:00:00Z)"
        ) in proc.stdout
    finally:
        lease.release(other)
    # A holder that dies never renews nor releases: its lease expires by itself.
    short = PgLockRow(endpoint.connect, "patroni:orders-staging", "Patroni cluster 'orders-staging'", ttl_s=1)
    assert_a_dead_holders_lease_expires(short)
