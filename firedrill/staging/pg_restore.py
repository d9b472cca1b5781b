"""Base backups and point-in-time restores on the local PostgreSQL staging.

A restore copies a base backup into a new data directory, points `restore_command` at the staging's
WAL archive, sets one recovery target with `recovery_target_action = 'promote'` and starts the copy on
its own free loopback port. The restored server never archives (`archive_mode = off`): it would
otherwise write its new timeline's history into the drill's archive, and the next restore would follow
that timeline instead of the source's. A restored server is always removed (`RestoredCluster.stop`),
also when its start fails, and is tracked for the interpreter-exit safety net meanwhile.

Server binaries run as the `postgres` OS user (see `pg_binaries`); Python stays root.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from firedrill.errors import DeadlineExceeded, StagingError
from firedrill.staging.common import (
    chown_tree,
    free_port,
    pid_alive,
    reap_zombies,
    remove_tree,
    signal_tree,
    track,
    untrack,
    wait_until,
)
from firedrill.staging.pg_binaries import PgBinaries, read_postmaster_pid, run_tool, service_user
from firedrill.staging.postgres import SUPERUSER, PgStaging

BASEBACKUP_METHOD = "pg_basebackup -c fast -X stream"

# Log lines that mark the end of WAL replay and the end of promotion; the prefix is '%m [%p] '.
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[\d+\] ")
_STOPPING = re.compile(r"LOG:\s+(recovery stopping .*)$")
_REDO_DONE = re.compile(r"LOG:\s+redo done at .*$")
_READY = re.compile(r"LOG:\s+database system is ready to accept connections")
_TIMELINE = re.compile(r"selected new timeline ID: (\d+)")
_RESTORED_SEG = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
_FATAL = re.compile(r"(?:FATAL|PANIC):\s+(.*)$")


def lsn_to_int(lsn: str) -> int:
    """'16/B374D848' -> byte position, for comparing LSNs."""
    try:
        high, low = lsn.split("/")
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError as exc:
        raise StagingError(f"not an LSN: {lsn!r}") from exc


@dataclass(frozen=True, slots=True)
class BaseBackup:
    label: str
    path: Path
    start_time: float  # server START TIME from backup_label (second precision)
    end_time: float  # when pg_basebackup returned: at or after the server's backup stop
    start_lsn: str
    end_lsn: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class ArchivedUpTo:
    """Everything committed before `time` (server clock) is in the archive, up to `lsn`."""

    lsn: str
    segment: str
    time: float
    waited_s: float


def take_base_backup(staging: PgStaging, label: str, *, timeout_s: float = 60.0) -> BaseBackup:
    """pg_basebackup of the current primary into the staging's backups/ directory.

    Always `-c fast`: a spread checkpoint would make the backup wait minutes. `-X stream` puts the WAL
    needed for consistency into the backup itself; everything after comes from the archive."""
    workdir, binaries = _require(staging)
    backups = workdir / "backups"
    backups.mkdir(exist_ok=True)
    path = backups / label
    if path.exists():
        raise StagingError(f"a base backup labelled {label!r} already exists")
    user = service_user()
    if user:
        chown_tree(backups, user)
    primary = staging.primary
    args = [binaries.tool("pg_basebackup"), "-D", str(path), "-h", "127.0.0.1", "-p", str(primary.port),
            "-U", SUPERUSER, "-X", "stream", "-c", "fast", "--no-sync", "-l", label]  # fmt: skip
    run_tool(args, user=user, home=workdir, timeout_s=timeout_s, what=f"base backup {label!r}")
    end_time = time.time()
    start_lsn, start_time = _read_backup_label(path / "backup_label")
    end_lsn = _read_manifest_end_lsn(path / "backup_manifest") or start_lsn
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return BaseBackup(label, path, start_time, end_time, start_lsn, end_lsn, size)


def _read_backup_label(path: Path) -> tuple[str, float]:
    text = path.read_text(encoding="utf-8", errors="replace")
    lsn = re.search(r"START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)", text)
    when = re.search(r"START TIME: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\S+)", text)
    if not lsn or not when:
        raise StagingError(f"unreadable backup_label in {path.parent}")
    started = datetime.strptime(when.group(1), "%Y-%m-%d %H:%M:%S")
    if when.group(2) in ("UTC", "GMT", "Etc/UTC"):
        return lsn.group(1), started.replace(tzinfo=UTC).timestamp()
    return lsn.group(1), started.timestamp()  # the server's local zone is this machine's


def _read_manifest_end_lsn(path: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError, TypeError):
        ranges = json.loads(path.read_text(encoding="utf-8"))["WAL-Ranges"]
        return str(ranges[-1]["End-LSN"])
    return None


def archive_wal(staging: PgStaging, *, timeout_s: float = 30.0) -> ArchivedUpTo:
    """Force the current WAL segment out and wait until the archiver has stored it.

    Only completed segments are archived. pg_switch_wal() returns the end of the segment it closed
    (+1), an LSN on a segment boundary, and pg_walfile_name() of a boundary LSN names the segment
    *before* it: exactly the one that must reach the archive. Waiting is on pg_stat_archiver, not on
    the file appearing, because `cp` creates the file before it has finished writing it."""
    started = time.monotonic()
    try:
        with staging.connect(staging.primary) as conn:
            row = conn.execute(
                "SELECT lsn::text, pg_walfile_name(lsn), extract(epoch FROM now_) "
                "FROM (SELECT pg_switch_wal() AS lsn, clock_timestamp() AS now_) s"
            ).fetchone()
            assert row is not None
            lsn, segment, at = str(row[0]), str(row[1]), float(row[2])  # type: ignore[arg-type]

            def archived() -> bool:
                got = conn.execute("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").fetchone()
                return got is not None and str(got[0])[:24] >= segment

            try:
                wait_until(f"WAL segment {segment} archived", archived, timeout_s=timeout_s, interval_s=0.01)
            except DeadlineExceeded as exc:
                last = conn.execute(
                    "SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver"
                ).fetchone()
                raise StagingError(
                    f"WAL segment {segment} not archived within {timeout_s:g} s "
                    f"(last archived {last[0] if last else '?'}, last failed {last[1] if last else '?'})"
                ) from exc
    except psycopg.Error as exc:
        raise StagingError(f"cannot force the WAL into the archive: {_one_line(exc)}") from exc
    return ArchivedUpTo(lsn=lsn, segment=segment, time=at, waited_s=time.monotonic() - started)


# ---- restore ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestoreLog:
    """What the restored server's log says about its recovery, with wall-clock times."""

    stop_point: str = ""  # "recovery stopping before commit of transaction 812, time ..."
    replay_end_wall: float | None = None
    ready_wall: float | None = None
    timeline: int | None = None
    segments_restored: int = 0
    fatal: str = ""


@dataclass(eq=False)  # identity-hashed: tracked in a set for the atexit teardown
class RestoredCluster:
    name: str
    port: int
    datadir: Path
    logfile: Path
    workdir: Path
    started_mono: float = 0.0
    copied_mono: float = 0.0
    start_issued_mono: float = 0.0
    start_issued_wall: float = 0.0
    ready_mono: float = 0.0
    log: RestoreLog = field(default_factory=RestoreLog)
    removed: bool = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def conninfo(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname} connect_timeout=2"

    def wall_to_mono(self, wall: float) -> float:
        """A server log time on the monotonic clock of this process (same host, same clock)."""
        return self.start_issued_mono + (wall - self.start_issued_wall)

    def stop(self) -> None:
        """Stop the server (immediate: its data is thrown away) and delete its data directory.
        Never raises; safe to call twice."""
        pid = read_postmaster_pid(self.datadir)
        if pid is not None and pid_alive(pid):
            _stop_postmaster(self, pid)
        reap_zombies("postgres")
        remove_tree(self.datadir)
        self.removed = not self.datadir.exists()
        untrack(self)


def restore(
    staging: PgStaging,
    backup: BaseBackup,
    name: str,
    recovery: dict[str, str],
    *,
    timeout_s: float = 120.0,
    on_phase: Callable[[str], None] | None = None,
) -> RestoredCluster:
    """Restore `backup` + the staging's archive with the `recovery` settings into a new server.

    Returns once the server has reached its target, been promoted and accepts connections. On any
    failure the half-made server is stopped and removed, and StagingError names the server's own
    reason (e.g. "recovery ended before configured recovery target was reached")."""
    workdir, _ = _require(staging)
    restores = workdir / "restores"
    restores.mkdir(exist_ok=True)
    cluster = RestoredCluster(
        name=name,
        port=free_port(),
        datadir=restores / name,
        logfile=workdir / "logs" / f"{name}.log",
        workdir=workdir,
        started_mono=time.monotonic(),
    )
    if cluster.datadir.exists():
        raise StagingError(f"a restored server named {name!r} already exists")
    track(cluster)
    try:
        _copy_backup(backup, cluster)
        cluster.copied_mono = time.monotonic()
        if on_phase:
            on_phase(f"base backup {backup.label!r} copied to {cluster.datadir.name}")
        _write_restore_config(staging, cluster, recovery)
        _start(staging, cluster, timeout_s)
        cluster.ready_mono = time.monotonic()
        cluster.log = parse_log(cluster.logfile)
        if on_phase:
            on_phase(f"recovery target reached, promoted, accepting connections on {cluster.address}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _copy_backup(backup: BaseBackup, cluster: RestoredCluster) -> None:
    user = service_user()
    parent = cluster.datadir.parent
    if user:
        shutil.chown(parent, user, user)
    # `cp -a` as the server's user keeps modes and owner and is several times faster than a
    # Python copytree followed by a chown walk.
    cp = shutil.which("cp") or "/bin/cp"
    run_tool([cp, "-a", str(backup.path), str(cluster.datadir)], user=user, home=cluster.workdir,
             timeout_s=300, what=f"copy of base backup {backup.label!r}")  # fmt: skip
    cluster.datadir.chmod(0o700)  # PostgreSQL refuses a group- or world-readable data directory
    # The backup was taken from the primary and carries its per-node settings file: a restored
    # server has no synchronous standby and would wait for one on every commit.
    role = cluster.datadir / "firedrill_role.conf"
    role.write_text("synchronous_standby_names = ''\n", encoding="utf-8")
    signal_file = cluster.datadir / "recovery.signal"
    signal_file.touch()
    if user:
        for path in (role, signal_file):
            shutil.chown(path, user, user)  # chown_tree walks directories only


def _write_restore_config(staging: PgStaging, cluster: RestoredCluster, recovery: dict[str, str]) -> None:
    archive = staging.archive_dir
    settings = {
        "port": str(cluster.port),
        # Never archive into the drill's archive (a new timeline's history file would steer the
        # next restore onto it); nothing to stream from either.
        "archive_mode": "off",
        "primary_conninfo": "''",
        "synchronous_standby_names": "''",
        "restore_command": f"'cp {archive}/%f %p'",
        "recovery_target_action": "'promote'",
        # Connections only once promoted, so `pg_ctl -w` returns exactly when the server is usable.
        "hot_standby": "off",
        "log_timezone": "'UTC'",  # the phase split reads times from the log
        **recovery,
    }
    lines = "\n".join(f"{k} = {v}" for k, v in settings.items())
    with (cluster.datadir / "postgresql.conf").open("a", encoding="utf-8") as fh:
        fh.write(f"\n# firedrill point-in-time restore {cluster.name}\n{lines}\n")


def _start(staging: PgStaging, cluster: RestoredCluster, timeout_s: float) -> None:
    workdir, binaries = _require(staging)
    user = service_user()
    if user:
        cluster.logfile.touch()
        shutil.chown(cluster.logfile, user, user)  # chown_tree walks directories only
    cluster.start_issued_mono = time.monotonic()
    cluster.start_issued_wall = time.time()
    args = [binaries.tool("pg_ctl"), "-D", str(cluster.datadir), "-l", str(cluster.logfile), "-w",
            "-t", str(int(max(1, timeout_s))), "-o", f"-p {cluster.port}", "start"]  # fmt: skip
    try:
        run_tool(args, user=user, home=workdir, timeout_s=timeout_s + 5, what=f"start of {cluster.name}")
        # pg_ctl -w already returns when archive recovery *begins* (the postmaster reports "standby"),
        # so the end of recovery and the promotion are awaited here.
        _wait_promoted(cluster, deadline=cluster.start_issued_mono + timeout_s)
    except StagingError as exc:
        log = parse_log(cluster.logfile)
        reason = log.fatal or str(exc)
        raise StagingError(f"restored server {cluster.name} did not start: {reason}") from exc


def _wait_promoted(cluster: RestoredCluster, *, deadline: float) -> None:
    """Wait for the postmaster.pid status "ready" (promoted, accepting connections), then confirm
    with one query. Reading the pid file instead of polling with connections keeps the server log
    free of "not accepting connections" lines."""
    last = "still in recovery"
    while True:
        pid = read_postmaster_pid(cluster.datadir)
        if pid is None or not pid_alive(pid):
            raise StagingError("the server exited during recovery")
        if _pm_status(cluster.datadir) == "ready":
            try:
                with psycopg.connect(cluster.conninfo("postgres"), autocommit=True) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row is not None and not row[0]:
                    return
            except psycopg.OperationalError as exc:
                last = _one_line(exc)
        if time.monotonic() >= deadline:
            raise StagingError(f"not promoted within the restore deadline ({last})")
        time.sleep(0.005)


def _pm_status(datadir: Path) -> str:
    try:
        lines = (datadir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return ""
    return lines[7].strip() if len(lines) > 7 else ""


def parse_log(logfile: Path) -> RestoreLog:
    try:
        lines = logfile.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return RestoreLog()
    stop_point, replay_end, ready, timeline, fatal = "", None, None, None, ""
    segments: set[str] = set()
    for line in lines:
        stamp = _LOG_TIME.match(line)
        wall = _log_wall(stamp.group(1)) if stamp else None
        if m := _STOPPING.search(line):
            stop_point, replay_end = m.group(1), wall
        elif _REDO_DONE.search(line) and replay_end is None:
            replay_end = wall
        elif _READY.search(line):
            ready = wall
        if m := _TIMELINE.search(line):
            timeline = int(m.group(1))
        if m := _RESTORED_SEG.search(line):
            segments.add(m.group(1))
        # The startup process's reason, not a client turned away while the server was starting.
        if (m := _FATAL.search(line)) and not fatal and not m.group(1).startswith("the database system is"):
            fatal = m.group(1).strip()
    return RestoreLog(stop_point, replay_end, ready, timeline, len(segments), fatal)


def _log_wall(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def _stop_postmaster(cluster: RestoredCluster, pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the restored copy is thrown away
    try:
        wait_until(f"{cluster.name} stopped", lambda: not pid_alive(pid), timeout_s=10, interval_s=0.02)
    except DeadlineExceeded:
        signal_tree(pid, signal.SIGKILL)
        with contextlib.suppress(DeadlineExceeded):
            wait_until(f"{cluster.name} killed", lambda: not pid_alive(pid), timeout_s=10, interval_s=0.02)


def _require(staging: PgStaging) -> tuple[Path, PgBinaries]:
    if staging.workdir is None or staging.binaries is None:
        raise StagingError("the PostgreSQL staging is not started")
    return staging.workdir, staging.binaries


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
