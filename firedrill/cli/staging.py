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

from firedrill.staging.common import pid_alive, remove_tree, workdir_owner
from firedrill.staging.postgres import PgStaging
from firedrill.staging.redis_sentinel import RedisSentinelStaging

_STAGING_DIRS = ("firedrill-pg-", "firedrill-redis-")


@click.group()
def staging() -> None:
    """Start the local staging in the foreground, or sweep up what a killed run left behind."""


@staging.command()
@click.option("--no-redis", is_flag=True, help="PostgreSQL only.")
def up(no_redis: bool) -> None:
    """Start PostgreSQL primary + standby (and Redis + Sentinels); stop them on Ctrl-C."""
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


def _leftovers(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.iterdir() if p.is_dir() and p.name.startswith(_STAGING_DIRS))


def _processes_using(path: Path) -> list[int]:
    """Server processes whose command line names a directory of the staging."""
    pids: list[int] = []
    needle = str(path)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = (
                Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(entry))
    return pids


@staging.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be stopped and removed.")
@click.option("--force", is_flag=True, help="Also stagings whose firedrill process is still running.")
def down(dry_run: bool, force: bool) -> None:
    """Stop servers and remove temp dirs that an interrupted or killed firedrill left behind."""
    tmp = Path(tempfile.gettempdir())
    found = _leftovers(tmp)
    if not found:
        click.echo("nothing left behind")
        return
    for path in found:
        owner = workdir_owner(path)
        if owner is not None and pid_alive(owner) and not force:
            click.echo(f"keeping {path}: in use by firedrill process {owner} (--force to remove)")
            continue
        pids = _processes_using(path)
        # Redis rewrites its process title to "redis-server 127.0.0.1:PORT": match it by the ports
        # in the staging's config files (one per node, in per-node subdirectories).
        for conf in path.rglob("*.conf"):
            port = re.search(r"^port (\d+)", conf.read_text(errors="replace"), re.M)
            if port:
                pids += _processes_using(Path(f"127.0.0.1:{port.group(1)}"))
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
