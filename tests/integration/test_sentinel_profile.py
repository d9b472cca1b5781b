"""Drilling a Redis Sentinel deployment firedrill did not start (`kind = "sentinel"`): the local
Redis Sentinel staging is started here as if someone else ran it, and firedrill only gets the
Sentinels' addresses and the master name. Plan first, then the @sentinel scenario (SENTINEL
FAILOVER), whose lost writes on the old master are the split-brain finding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from firedrill.staging.redis_sentinel import RedisSentinelStaging, RedisStagingConfig
from firedrill.targets.lease import Holder
from firedrill.targets.lease_stores import RedisLeaseKey
from tests.fixtures.leases import assert_a_dead_holders_lease_expires

FIREDRILL = [sys.executable, "-m", "firedrill.cli.main"]


@pytest.fixture(scope="module")
def theirs() -> Iterator[RedisSentinelStaging]:
    with RedisSentinelStaging(RedisStagingConfig(master_name="sessions-staging")) as staging:
        staging.wait_steady()
        yield staging


def _toml(staging: RedisSentinelStaging, masters: str = '["sessions-staging"]') -> str:
    sentinels = ", ".join(f'"{h}:{p}"' for h, p in staging.sentinel_addresses())
    return f"""
[profiles.theirs]
kind = "sentinel"
[profiles.theirs.sentinel]
sentinels = [{sentinels}]
master_name = "{staging.master_name}"
allowed_masters = {masters}
"""


def _firedrill(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FIREDRILL, *args], cwd=work, capture_output=True, text=True, timeout=300, env=os.environ
    )


def test_plan_names_the_sentinel_failover_and_changes_nothing(
    theirs: RedisSentinelStaging, tmp_path: Path
) -> None:
    (tmp_path / "firedrill.toml").write_text(_toml(theirs))
    master = theirs.current_master()
    proc = _firedrill(tmp_path, "plan", "cache-failover", "--env", "theirs")
    assert proc.returncode == 0, proc.stderr
    assert "Redis master 'sessions-staging' is in allowed_masters" in proc.stdout
    assert "[rest] SENTINEL FAILOVER sessions-staging" in proc.stdout
    assert "faults possible here: switchover" in proc.stdout
    assert theirs.current_master() == master


def test_a_master_not_allowed_is_refused_in_one_line(theirs: RedisSentinelStaging, tmp_path: Path) -> None:
    (tmp_path / "firedrill.toml").write_text(_toml(theirs, masters='["cache-staging"]'))
    proc = _firedrill(tmp_path, "run", "cache-failover", "--env", "theirs")
    assert proc.returncode == 2
    assert (
        "refusing Redis master 'sessions-staging': not in allowed_masters (cache-staging)"
        in proc.stdout + proc.stderr
    )


def test_a_sentinel_failover_of_someone_elses_deployment(
    theirs: RedisSentinelStaging, tmp_path: Path
) -> None:
    (tmp_path / "firedrill.toml").write_text(_toml(theirs))
    before = theirs.current_master()
    proc = _firedrill(tmp_path, "run", "cache-failover", "--env", "theirs")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1/1 scenarios passed" in proc.stdout, proc.stdout[-2000:]
    [path] = list((tmp_path / "reports" / "out").glob("*/evidence.json"))
    record = json.loads(path.read_text())
    assert record["environment"]["kind"] == "sentinel" and record["fault"] == "switchover"
    assert record["measurements"]["recovered"] and record["measurements"]["recovered_node"] != (
        f"127.0.0.1:{before.port}"
    )
    checks = {c["name"]: c for c in record["checks"]}
    assert checks["topology restored"]["passed"], checks["topology restored"]
    split = checks["no write acknowledged by a failed node after the fault is lost"]
    assert not split["blocking"]  # a finding: the RPO promise judges the loss
    assert theirs.current_master() != before  # Sentinel did it, and the old master rejoined
    theirs.wait_steady()


def test_a_second_drill_is_refused_naming_the_holder_until_its_lease_expires(
    theirs: RedisSentinelStaging, tmp_path: Path
) -> None:
    (tmp_path / "firedrill.toml").write_text(_toml(theirs))
    lease = RedisLeaseKey(
        lambda: theirs.client(theirs.current_master()),
        "firedrill:lease:sessions-staging",
        "Redis master 'sessions-staging'",
        ttl_s=60,
    )
    other = Holder("bob", "ops-2", 777, "20261202T150000Z-cache-failover-def456", "2026-12-02T15:00:00Z")
    lease.acquire(other)
    try:
        proc = _firedrill(tmp_path, "run", "cache-failover", "--env", "theirs")
        assert proc.returncode == 2, proc.stdout[-2000:]
        assert "Redis master 'sessions-staging' is being drilled by bob@ops-2 (pid 777, run" in proc.stdout
    finally:
        lease.release(other)
    # A holder that dies never renews nor releases: the key's PX TTL ends its lease.
    short = RedisLeaseKey(lease.client, lease.key, lease.name, ttl_s=1)
    assert_a_dead_holders_lease_expires(short)
