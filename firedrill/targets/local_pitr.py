"""RestoreTarget over the embedded local PostgreSQL staging: base backups, WAL archive, restores.

The SQL in the "PostgreSQL" section is plain PostgreSQL (application table, checksum, disaster
statements, commit timestamps), so an RDS adapter can reuse those functions over its own connections.
psycopg and staging errors become TargetError here, at the adapter boundary.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

from firedrill.config import Profile
from firedrill.errors import HarnessError, StagingError, TargetError
from firedrill.evidence import Node
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.staging import pg_restore
from firedrill.staging.pg_restore import BaseBackup, RestoredCluster, lsn_to_int
from firedrill.staging.postgres import DATABASE, SUPERUSER, PgStaging, PgStagingConfig
from firedrill.targets import pg_canary
from firedrill.targets.base import TargetDescription
from firedrill.targets.pg_canary import CANARY_TABLE, PgCanarySession, PgEndpoint
from firedrill.targets.restore_base import (
    AppDataState,
    BackupInfo,
    DisasterKind,
    DisasterRecord,
    PhaseCallback,
    RecoveryPoint,
    RecoveryTarget,
    RefusalReason,
    RestoredHandle,
    RestorePhase,
    RestoreRefused,
    RestoreWindow,
    TargetKind,
    fmt_time,
)

Conn = psycopg.Connection[tuple[object, ...]]

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
CHECK_TABLE = "firedrill_restore_check"


# ---- PostgreSQL (shared by every PostgreSQL RestoreTarget) ----------------------------------------


def table_ident(table: str) -> sql.Identifier:
    if not _IDENT.match(table):
        raise TargetError(f"invalid application table name {table!r} (lower-case letters, digits, _)")
    return sql.Identifier(table)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """psycopg and staging errors as TargetError naming what was being done."""
    try:
        yield
    except psycopg.Error as exc:
        raise TargetError(f"{what}: {_one_line(exc)}", code=exc.sqlstate) from exc
    except StagingError as exc:
        raise TargetError(f"{what}: {exc}") from exc


def _num(value: object) -> float:
    return float(value)  # type: ignore[arg-type]


def app_state(conn: Conn, table: str) -> AppDataState:
    """Row count and md5 over every row in key order, read in one snapshot."""
    ident = table_ident(table)
    head = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL, extract(epoch FROM clock_timestamp()), pg_is_in_recovery()",
        (table,),
    ).fetchone()
    assert head is not None
    if not head[0]:
        return AppDataState(table=table, exists=False, rows=0, checksum="", at_time=_num(head[1]))
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), coalesce(md5(string_agg("
            "concat_ws('|', id, customer, amount, extract(epoch FROM placed_at)), E'\\n' ORDER BY id)), '') "
            "FROM {}"
        ).format(ident)
    ).fetchone()
    assert row is not None
    return AppDataState(
        table=table, exists=True, rows=int(_num(row[0])), checksum=str(row[1]), at_time=_num(head[1])
    )


def _committed_state(conn: Conn, table: str, xid: str) -> AppDataState:
    """The table's state after transaction `xid`, stamped with its commit time and the WAL position."""
    state = app_state(conn, table)
    row = conn.execute(
        "SELECT extract(epoch FROM pg_xact_commit_timestamp(%s::xid)), pg_current_wal_insert_lsn()::text",
        (xid,),
    ).fetchone()
    assert row is not None
    at = _num(row[0]) if row[0] is not None else state.at_time
    return AppDataState(state.table, state.exists, state.rows, state.checksum, at, str(row[1]))


def _xid32(conn: Conn) -> str:
    """This transaction's id as recovery_target_xid and pg_xact_commit_timestamp take it (32 bits)."""
    row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
    assert row is not None
    return str(int(str(row[0])) & 0xFFFFFFFF)


def create_app_table(conn: Conn, table: str, rows: int) -> AppDataState:
    """(Re)create the table with `rows` rows computed from their id, so the content is known."""
    ident = table_ident(table)
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, customer text NOT NULL, "
                "amount numeric(12,2) NOT NULL, placed_at timestamptz NOT NULL)"
            ).format(ident)
        )
        _insert_rows(conn, ident, 1, rows)
        xid = _xid32(conn)
    return _committed_state(conn, table, xid)


def add_rows(conn: Conn, table: str, rows: int) -> AppDataState:
    ident = table_ident(table)
    with conn.transaction():
        got = conn.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(ident)).fetchone()
        first = int(_num(got[0])) + 1 if got else 1
        _insert_rows(conn, ident, first, first + rows - 1)
        xid = _xid32(conn)
    return _committed_state(conn, table, xid)


def _insert_rows(conn: Conn, ident: sql.Identifier, first: int, last: int) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} SELECT g, 'customer-' || lpad((g %% 997)::text, 3, '0'), "
            "round(((g * 7919) %% 100000) / 100.0, 2), "
            "timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute' "
            "FROM generate_series(%s::bigint, %s::bigint) g"
        ).format(ident),
        (first, last),
    )


DISASTER_SQL = {
    DisasterKind.DROP_TABLE: "DROP TABLE {}",
    DisasterKind.DELETE_ALL: "DELETE FROM {}",
}


def run_disaster(conn: Conn, kind: DisasterKind, table: str) -> DisasterRecord:
    """Run the destructive statement in its own transaction and record its id, commit time and WAL
    positions: the firedrill restores to just before exactly this transaction."""
    template = DISASTER_SQL[kind]
    statement = sql.SQL(template).format(table_ident(table))
    with conn.transaction():
        head = conn.execute("SELECT extract(epoch FROM now()), pg_current_wal_insert_lsn()::text").fetchone()
        assert head is not None
        xid = _xid32(conn)
        cur = conn.execute(statement)
        affected = cur.rowcount if cur.rowcount >= 0 else None
    row = conn.execute(
        "SELECT extract(epoch FROM pg_xact_commit_timestamp(%s::xid)), pg_current_wal_insert_lsn()::text",
        (xid,),
    ).fetchone()
    assert row is not None and row[0] is not None
    return DisasterRecord(
        kind=kind,
        table=table,
        statement=template.format(table),
        issued_time=_num(head[0]),
        commit_time=_num(row[0]),
        xid=int(xid),
        lsn_before=str(head[1]),
        lsn_after=str(row[1]),
        rows_affected=affected if kind is DisasterKind.DELETE_ALL else None,
    )


def canary_commits(conn: Conn, run_id: str) -> list[tuple[int, float]]:
    rows = conn.execute(
        f"SELECT seq, extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM {CANARY_TABLE} "
        "WHERE run_id = %s",
        (run_id,),
    ).fetchall()
    return [(int(_num(r[0])), _num(r[1])) for r in rows if r[1] is not None]


def xid_commit_time(conn: Conn, xid: str) -> float | None:
    row = conn.execute("SELECT extract(epoch FROM pg_xact_commit_timestamp(%s::xid))", (xid,)).fetchone()
    return None if row is None or row[0] is None else _num(row[0])


def newest_commit(conn: Conn) -> float | None:
    row = conn.execute("SELECT extract(epoch FROM timestamp) FROM pg_last_committed_xact()").fetchone()
    return None if row is None or row[0] is None else _num(row[0])


# ---- the local adapter ----------------------------------------------------------------------------


class RestoredReads:
    """Verification reads on a restored PostgreSQL, the same wherever it was restored: adapters
    supply `_restored`, a translated connection to the restored server."""

    def _restored(self, handle: RestoredHandle, what: str) -> contextlib.AbstractContextManager[Conn]:
        raise NotImplementedError

    def restored_canary(self, handle: RestoredHandle, run_id: str) -> frozenset[int]:
        with self._restored(handle, "reading canary records") as conn:
            return pg_canary.read_back(conn, run_id)

    def restored_app_state(self, handle: RestoredHandle, table: str) -> AppDataState:
        with self._restored(handle, f"reading {table}") as conn:
            return app_state(conn, table)

    def restored_newest_commit(self, handle: RestoredHandle) -> float | None:
        with self._restored(handle, "reading the newest commit") as conn:
            return newest_commit(conn)


@dataclass
class _Restore:
    cluster: RestoredCluster
    handle: RestoredHandle


class LocalPitrTarget(RestoredReads):
    def __init__(self, staging: PgStaging) -> None:
        self._staging = staging
        self._backups: list[BaseBackup] = []
        self._window: RestoreWindow | None = None
        self._restores: dict[str, _Restore] = {}
        self._history: list[Node] = []  # restored servers of this target, for the evidence
        self._counter = 0

    # ---- description -------------------------------------------------------------------------
    def describe(self) -> TargetDescription:
        s = self._staging
        version = s.server_version()
        nodes = [Node(name=n.name, role=n.role, address=n.address, version=version) for n in s.nodes]
        backup = self._backups[-1] if self._backups else None
        return TargetDescription(
            kind="postgres",
            environment_kind="local-staging",
            servers={"postgresql": version},
            nodes=tuple(nodes + self._history),
            settings={
                "wal_archive": str(s.archive_dir) if s.workdir else "",
                "archive_command": "cp into the archive directory (test ! -f first)",
                "track_commit_timestamp": "on",
                "base_backup": f"{backup.label} ({pg_restore.BASEBACKUP_METHOD})" if backup else "none",
                "restore_command": "cp from the archive directory",
                "recovery_target_action": "promote",
                "restored_archive_mode": "off",
            },
        )

    def supported_target_kinds(self) -> frozenset[TargetKind]:
        return frozenset(TargetKind)

    def endpoint(self) -> PgEndpoint:
        return PgEndpoint(hosts=(("127.0.0.1", self._staging.primary.port),), dbname=DATABASE, user=SUPERUSER)

    @contextlib.contextmanager
    def _source(self, what: str) -> Iterator[Conn]:
        with translated(what), self._staging.connect(self._staging.primary) as conn:
            yield conn

    # ---- backups and archive -----------------------------------------------------------------
    def take_base_backup(self) -> BackupInfo:
        label = f"base-{len(self._backups) + 1}"
        with translated(f"base backup {label}"):
            self._backups.append(pg_restore.take_base_backup(self._staging, label))
        self._window = None
        return self.newest_backup()

    def newest_backup(self) -> BackupInfo:
        if not self._backups:
            raise TargetError("no base backup has been taken on the local staging")
        b = self._backups[-1]
        return BackupInfo(
            b.label, b.start_time, b.end_time, b.end_lsn, pg_restore.BASEBACKUP_METHOD, b.size_bytes
        )

    def restore_window(self) -> RestoreWindow:
        backup = self.newest_backup()
        with translated("archiving the current WAL segment"):
            archived = pg_restore.archive_wal(self._staging)
        self._window = RestoreWindow(
            newest_backup=backup,
            earliest_time=backup.end_time,
            latest_time=archived.time,
            earliest_lsn=backup.end_lsn,
            latest_lsn=archived.lsn,
            retention_days=None,
            detail=(
                f"pg_switch_wal() at LSN {archived.lsn}; segment {archived.segment} archived "
                f"(pg_stat_archiver) after {archived.waited_s:.3f} s"
            ),
        )
        return self._window

    # ---- the source database -----------------------------------------------------------------
    def prepare_app_data(self, table: str, rows: int) -> AppDataState:
        with self._source(f"creating application table {table}") as conn:
            return create_app_table(conn, table, rows)

    def add_app_rows(self, table: str, rows: int) -> AppDataState:
        with self._source(f"adding rows to {table}") as conn:
            return add_rows(conn, table, rows)

    def app_data_state(self, table: str) -> AppDataState:
        with self._source(f"reading {table}") as conn:
            return app_state(conn, table)

    def prepare_canary(self, run_id: str) -> None:
        with self._source("creating the canary table") as conn:
            pg_canary.prepare_canary(conn)

    def session_factory(self, run_id: str, probe: ProbeConfig) -> SessionFactory:
        endpoint = self.endpoint()
        return lambda: PgCanarySession(endpoint, run_id, probe)

    def canary_commits(self, run_id: str) -> list[tuple[int, float]]:
        with self._source("reading canary commit timestamps") as conn:
            return canary_commits(conn, run_id)

    def recovery_point(self) -> RecoveryPoint:
        with self._source("noting a recovery point") as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM clock_timestamp()), pg_current_wal_insert_lsn()::text"
            ).fetchone()
        assert row is not None
        return RecoveryPoint(time=_num(row[0]), lsn=str(row[1]))

    def create_disaster(self, kind: DisasterKind, table: str) -> DisasterRecord:
        with self._source(f"{kind.value} on {table}") as conn:
            return run_disaster(conn, kind, table)

    # ---- restore -----------------------------------------------------------------------------
    def restore_to(
        self, target: RecoveryTarget, *, timeout_s: float, on_phase: PhaseCallback | None = None
    ) -> RestoredHandle:
        window = self._window or self.restore_window()
        try:
            self._refuse_outside(target, window)
        except RestoreRefused as exc:
            if exc.reason is not RefusalReason.BEYOND_ARCHIVE:
                raise
            # The window may be stale: archive what was written since, then judge again.
            self._refuse_outside(target, self.restore_window())
        self._counter += 1
        name = f"restore-{self._counter}"
        backup = self._backups[-1]
        try:
            cluster = pg_restore.restore(
                self._staging, backup, name, target.settings(), timeout_s=timeout_s, on_phase=on_phase
            )
        except StagingError as exc:
            raise TargetError(f"restore to {target.description} failed: {exc}") from exc
        handle = self._handle(cluster, target)
        self._restores[name] = _Restore(cluster, handle)
        self._history.append(
            Node(
                name=name,
                role="restored (removed after the drill)",
                address=cluster.address,
                version=self._staging.server_version(),
            )
        )
        return handle

    def _refuse_outside(self, target: RecoveryTarget, window: RestoreWindow) -> None:
        """Refuse before creating anything, naming the target and the bound it breaks."""
        backup = window.newest_backup
        if target.kind is TargetKind.LSN:
            lsn = lsn_to_int(target.value)
            if window.earliest_lsn and lsn < lsn_to_int(window.earliest_lsn):
                raise RestoreRefused(
                    f"target LSN {target.value} is before the backup end LSN {window.earliest_lsn} "
                    f"(backup {backup.label}, ended {fmt_time(backup.end_time)})",
                    reason=RefusalReason.BEFORE_BACKUP,
                )
            if window.latest_lsn and lsn > lsn_to_int(window.latest_lsn):
                raise RestoreRefused(
                    f"target LSN {target.value} is beyond the end of the archived WAL {window.latest_lsn}",
                    reason=RefusalReason.BEYOND_ARCHIVE,
                )
            return
        when = target.cutoff_time
        subject = f"target time {fmt_time(when)}"
        if target.kind is TargetKind.XID:
            with self._source(f"looking up transaction {target.value}") as conn:
                committed = xid_commit_time(conn, target.value)
            if committed is None:
                raise RestoreRefused(
                    f"target transaction {target.value} has no commit timestamp on the source "
                    "(not committed, or committed before track_commit_timestamp was on)",
                    reason=RefusalReason.UNSUPPORTED,
                )
            when = committed
            subject = f"target transaction {target.value} (committed {fmt_time(committed)})"
        if when < window.earliest_time:
            raise RestoreRefused(
                f"{subject} is before the backup end time {fmt_time(window.earliest_time)} "
                f"(backup {backup.label})",
                reason=RefusalReason.BEFORE_BACKUP,
            )
        if when > window.latest_time:
            raise RestoreRefused(
                f"{subject} is after the end of the archived WAL {fmt_time(window.latest_time)} "
                f"({window.detail})",
                reason=RefusalReason.BEYOND_ARCHIVE,
            )

    def _handle(self, cluster: RestoredCluster, target: RecoveryTarget) -> RestoredHandle:
        log = cluster.log
        replay_end = cluster.ready_mono
        if log.replay_end_wall is not None:
            replay_end = min(
                max(cluster.wall_to_mono(log.replay_end_wall), cluster.copied_mono), cluster.ready_mono
            )
        phases = (
            RestorePhase("copy", cluster.started_mono, cluster.copied_mono, "base backup copied (cp -a)"),
            RestorePhase(
                "WAL replay",
                cluster.copied_mono,
                replay_end,
                f"server start, {log.segments_restored} WAL segments fetched from the archive, replayed to "
                f"the target" + (f": {log.stop_point}" if log.stop_point else ""),
            ),
            RestorePhase(
                "promotion",
                replay_end,
                cluster.ready_mono,
                "end-of-recovery checkpoint"
                + (f", new timeline {log.timeline}" if log.timeline else "")
                + ", accepting connections",
            ),
        )
        endpoint = PgEndpoint(hosts=(("127.0.0.1", cluster.port),), dbname=DATABASE, user=SUPERUSER)
        return RestoredHandle(
            name=cluster.name,
            address=cluster.address,
            endpoint=endpoint,
            target=target,
            started_mono=cluster.started_mono,
            ready_mono=cluster.ready_mono,
            phases=phases,
            stop_point=log.stop_point or "recovery ended at the target",
            timeline=log.timeline,
            details={"datadir": str(cluster.datadir), "segments_restored": str(log.segments_restored)},
        )

    @contextlib.contextmanager
    def _restored(self, handle: RestoredHandle, what: str) -> Iterator[Conn]:
        conninfo = handle.endpoint.conninfo(statement_timeout_ms=10_000, read_write=False)
        with (
            translated(f"{what} on the restored server {handle.address}"),
            psycopg.connect(conninfo, autocommit=True) as conn,
        ):
            yield conn

    def restored_isolation(self, handle: RestoredHandle) -> tuple[bool, str]:
        with self._restored(handle, "reading archive_mode") as conn:
            row = conn.execute("SHOW archive_mode").fetchone()
        archive_mode = str(row[0]) if row else "?"
        source_ports = {n.port for n in self._staging.nodes}
        own_port = handle.endpoint.hosts[0][1] not in source_ports
        history = f"{handle.timeline:08X}.history" if handle.timeline else None
        leaked = bool(history and (self._staging.archive_dir / history).exists())
        ok = archive_mode == "off" and own_port and not leaked
        detail = (
            f"archive_mode={archive_mode}; own port {handle.address}"
            f"{'' if own_port else ' (SHARED with the source!)'}; "
            + (f"{history} {'FOUND' if leaked else 'absent'} in the drill's archive" if history else "")
        )
        return ok, detail

    def accept_write(self, handle: RestoredHandle) -> str:
        conninfo = handle.endpoint.conninfo(statement_timeout_ms=5_000)
        with (
            translated(f"writing on the restored server {handle.address}"),
            psycopg.connect(conninfo, autocommit=True) as conn,
        ):
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {CHECK_TABLE} "
                "(at timestamptz NOT NULL DEFAULT clock_timestamp(), target text NOT NULL)"
            )
            row = conn.execute(
                f"INSERT INTO {CHECK_TABLE} (target) VALUES (%s) RETURNING pg_current_wal_insert_lsn()::text",
                (handle.target.description,),
            ).fetchone()
        return f"write committed on {handle.address} at LSN {row[0] if row else '?'}" + (
            f" (timeline {handle.timeline})" if handle.timeline else ""
        )

    def drop_restored(self, handle: RestoredHandle) -> str:
        entry = self._restores.pop(handle.name, None)
        if entry is None:
            return f"{handle.name} already removed"
        entry.cluster.stop()
        if not entry.cluster.removed:
            raise TargetError(
                f"restored server {handle.name}: data directory {entry.cluster.datadir} not removed"
            )
        return f"{handle.name} ({handle.address}) stopped and its data directory removed"

    def live_restores(self) -> list[str]:
        return [name for name, r in self._restores.items() if r.cluster.datadir.exists()]

    def close(self) -> None:
        """Remove every restored server; the staging itself belongs to whoever started it."""
        for entry in list(self._restores.values()):
            with contextlib.suppress(HarnessError):
                self.drop_restored(entry.handle)


@contextlib.contextmanager
def open_local_pitr(profile: Profile) -> Iterator[LocalPitrTarget]:
    """The local staging with a fresh base backup, torn down (restores included) afterwards."""
    with PgStaging(PgStagingConfig(sync_replication=profile.sync_replication)) as staging:
        target = LocalPitrTarget(staging)
        try:
            target.take_base_backup()
            yield target
        finally:
            target.close()
