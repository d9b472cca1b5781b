"""`firedrill staging up|down`: the local staging by hand, for exploring or for a drill of your own."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
import time
from pathlib import Path

import click

from firedrill.staging.common import pid_alive, pids_naming, remove_tree, workdir_owner
from firedrill.staging.patroni import WORKDIR_PREFIX as HA_PREFIX
from firedrill.staging.patroni import PatroniStaging
from firedrill.staging.postgres import PgStaging
from firedrill.staging.redis_sentinel import RedisSentinelStaging
from firedrill.staging.zones import sweep as sweep_zones

_STAGING_DIRS = ("firedrill-pg-", "firedrill-redis-", HA_PREFIX)


@click.group()
def staging() -> None:
    """Start the local staging in the foreground, or sweep up what a killed run left behind."""


@staging.command()
@click.option("--no-redis", is_flag=True, help="PostgreSQL only.")
@click.option("--ha", is_flag=True, help="The HA staging instead: etcd x3, Patroni x3, HAProxy.")
def up(no_redis: bool, ha: bool) -> None:
    """Start PostgreSQL primary + standby (and Redis + Sentinels); stop them on Ctrl-C."""
    if ha:
        _up_ha()
        return
    try:
        with contextlib.ExitStack() as stack:
            pg = stack.enter_context(PgStaging())
            steady = pg.wait_steady(max_lag_s=1.0, timeout_s=30)
            click.echo(
                f"PostgreSQL {pg.server_version()} in {pg.workdir} (replay lag {steady['replay_lag_s']} s)"
            )
            for node in pg.nodes:
                click.echo(f"  {node.name:<8} {node.role:<8} psql '{node.conninfo()}'")
            if not no_redis:
                rs = stack.enter_context(RedisSentinelStaging())
                rs.wait_steady()
                master = rs.current_master()
                click.echo(f"Redis (master set '{rs.master_name}') in {rs.workdir}")
                for rnode in rs.nodes:
                    click.echo(
                        f"  {rnode.name:<8} {'master' if rnode == master else 'replica':<8} "
                        f"redis-cli -p {rnode.port}"
                    )
                for name, port in rs.sentinels:
                    click.echo(f"  {name:<8} sentinel redis-cli -p {port}")
            click.echo("Ctrl-C stops everything.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass  # the ExitStack has stopped every server by now
    click.echo("staging stopped")


def _up_ha() -> None:
    try:
        with PatroniStaging() as ha:
            assert ha.etcd is not None
            click.echo(f"Patroni cluster '{ha.scope}' in {ha.workdir} (started in {ha.started_s or 0:.1f} s)")
            click.echo(f"  application endpoint (HAProxy -> /primary): {ha.endpoint_address}")
            for node in ha.nodes:
                click.echo(f"  {node.name:<8} REST {node.rest_url:<24} psql '{node.conninfo()}'")
            click.echo(f"  etcd     {ha.etcd.hosts}  leader key {ha.leader_key}")
            click.echo("Ctrl-C stops everything.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    click.echo("staging stopped")


def _leftovers(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.iterdir() if p.is_dir() and p.name.startswith(_STAGING_DIRS))


@staging.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be stopped and removed.")
@click.option("--force", is_flag=True, help="Also stagings whose firedrill process is still running.")
def down(dry_run: bool, force: bool) -> None:
    """Stop servers and remove temp dirs (and zone namespaces) an interrupted or killed firedrill left."""
    tmp = Path(tempfile.gettempdir())
    swept = sweep_zones(dry_run=dry_run, force=force)  # first: it stops what still runs inside them
    for line in swept:
        click.echo(line)
    found = _leftovers(tmp)
    if not found:
        if not swept:
            click.echo("nothing left behind")
        return
    for path in found:
        owner = workdir_owner(path)
        if owner is not None and pid_alive(owner) and not force:
            click.echo(f"keeping {path}: in use by firedrill process {owner} (--force to remove)")
            continue
        pids = pids_naming(str(path))  # server processes naming a directory of the staging
        # Redis rewrites its process title to "redis-server 127.0.0.1:PORT": match it by the ports
        # in the staging's config files (one per node, in per-node subdirectories).
        for conf in path.rglob("*.conf"):
            port = re.search(r"^port (\d+)", conf.read_text(errors="replace"), re.M)
            if port:
                pids += pids_naming(f"127.0.0.1:{port.group(1)}")
        click.echo(
            f"{'would remove' if dry_run else 'removing'} {path}"
            + (f" and stop pids {sorted(set(pids))}" if pids else "")
        )
        if dry_run:
            continue
        for pid in set(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        remove_tree(path)


COMMANDS = [staging]
