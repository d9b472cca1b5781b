"""The interface the point-in-time restore drill talks to, local staging or a managed service.

A RestoreTarget is a PostgreSQL database with backups and a continuous WAL archive that can be
restored, to a chosen point, into a *new* server next to the source (never over it). The drill
(`drills/pitr.py`) only uses this Protocol, so an AWS RDS adapter (`restore_db_instance_to_point_in_time`)
can implement it beside the local one (`firedrill.targets.local_pitr`); `firedrill.targets.factory`
picks the one for a profile (`open_restore_target`).

Times are Unix epoch seconds on the database server's clock (commit timestamps), which is what a
recovery target is compared with. LSNs are PostgreSQL's text form ("0/3000148").
Differences between adapters show as capabilities (`supported_target_kinds`), never as environment
checks in the drill.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from firedrill.errors import TargetError
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.targets.base import TargetDescription
from firedrill.targets.pg_canary import PgEndpoint


class DisasterKind(StrEnum):
    DROP_TABLE = "drop-table"  # DROP TABLE of an application table
    DELETE_ALL = "delete-without-where"  # DELETE FROM table, WHERE clause forgotten


class TargetKind(StrEnum):
    TIME = "time"  # recovery_target_time
    LSN = "lsn"  # recovery_target_lsn
    XID = "xid"  # recovery_target_xid


class RefusalReason(StrEnum):
    BEFORE_BACKUP = "before-backup"
    BEYOND_ARCHIVE = "beyond-archive"
    UNSUPPORTED = "unsupported"


def fmt_time(epoch: float) -> str:
    """Microsecond UTC time, as PostgreSQL accepts it in recovery_target_time and as reports show it."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def pg_time(epoch: float) -> str:
    """The same instant as PostgreSQL's recovery_target_time accepts it (it rejects a trailing Z)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


class RestoreRefused(TargetError):
    """The target cannot be restored to; the message names the target and the bound it breaks
    (barman style: "target time X is before the backup end time Y"). Nothing was created."""

    def __init__(self, message: str, *, reason: RefusalReason, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """A base backup (local: pg_basebackup; RDS: an automated backup or snapshot)."""

    label: str
    start_time: float
    end_time: float  # the earliest time this backup can be restored to
    end_lsn: str | None = None
    method: str = ""  # e.g. "pg_basebackup -c fast -X stream"
    size_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class RestoreWindow:
    """What can be restored right now: from the newest backup's end to the end of the archived WAL."""

    newest_backup: BackupInfo
    earliest_time: float
    latest_time: float  # every commit before this is in the archive (RDS: LatestRestorableTime)
    earliest_lsn: str | None = None
    latest_lsn: str | None = None
    retention_days: float | None = None  # None: not managed by a retention policy (local staging)
    detail: str = ""  # how the latest bound was established, e.g. the last archived WAL segment


@dataclass(frozen=True, slots=True)
class AppDataState:
    """Row count and content checksum of an application table at one moment."""

    table: str
    exists: bool
    rows: int
    checksum: str  # md5 of the rows in key order; "" when the table does not exist
    at_time: float  # commit time of the change that produced this state (or when it was read)
    lsn: str | None = None  # WAL insert position right after that change


@dataclass(frozen=True, slots=True)
class RecoveryPoint:
    """A moment noted on the source: its server time and WAL position, taken in one statement."""

    time: float
    lsn: str | None = None


@dataclass(frozen=True, slots=True)
class DisasterRecord:
    kind: DisasterKind
    table: str
    statement: str
    issued_time: float  # server clock when the statement's transaction started
    commit_time: float  # commit timestamp of the disaster's transaction
    xid: int | None = None
    lsn_before: str | None = None
    lsn_after: str | None = None
    rows_affected: int | None = None


@dataclass(frozen=True, slots=True)
class RecoveryTarget:
    """Where to stop replaying WAL, and what that means for verification.

    `cutoff_time` separates commits the restore must hold from those it must not: with `inclusive`,
    commits at or before it belong to the restore, otherwise only commits before it."""

    kind: TargetKind
    value: str  # as PostgreSQL takes it: a time, an LSN or a transaction id
    inclusive: bool
    cutoff_time: float
    description: str  # for humans: "just before the disaster (transaction 812)"

    def settings(self) -> dict[str, str]:
        """The recovery settings this target becomes on a PostgreSQL server (quoted values)."""
        return {
            f"recovery_target_{self.kind.value}": f"'{self.value}'",
            "recovery_target_inclusive": "on" if self.inclusive else "off",
        }

    @staticmethod
    def at_time(when: float, description: str = "") -> RecoveryTarget:
        return RecoveryTarget(
            TargetKind.TIME, pg_time(when), True, when, description or f"time {fmt_time(when)}"
        )

    @staticmethod
    def before_lsn(lsn: str, cutoff_time: float, description: str = "") -> RecoveryTarget:
        # Exclusive: PostgreSQL applies the first record at or after an inclusive LSN target too,
        # which would be a commit made after the noted moment.
        return RecoveryTarget(TargetKind.LSN, lsn, False, cutoff_time, description or f"LSN {lsn}")

    @staticmethod
    def before_xid(xid: int, commit_time: float, description: str = "") -> RecoveryTarget:
        return RecoveryTarget(
            TargetKind.XID, str(xid), False, commit_time, description or f"just before transaction {xid}"
        )


@dataclass(frozen=True, slots=True)
class RestorePhase:
    """One phase of a restore on the monotonic clock (copy, WAL replay, promotion)."""

    name: str
    start_mono: float
    end_mono: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RestoredHandle:
    """A restored server, promoted and accepting connections. Drop it with `drop_restored`."""

    name: str
    address: str
    endpoint: PgEndpoint
    target: RecoveryTarget
    started_mono: float  # restore_to() called
    ready_mono: float  # server promoted and accepting connections
    phases: tuple[RestorePhase, ...] = ()
    stop_point: str = ""  # where recovery stopped, in the server's words
    timeline: int | None = None
    details: dict[str, str] = field(default_factory=dict)


PhaseCallback = Callable[[str], None]


class RestoreTarget(Protocol):
    """A PostgreSQL database with base backups and a WAL archive, restorable to a point in time."""

    def describe(self) -> TargetDescription: ...

    def supported_target_kinds(self) -> frozenset[TargetKind]:
        """RDS restores to a time only; the local staging also to an LSN or a transaction id."""
        ...

    # ---- backups and archive -----------------------------------------------------------------
    def newest_backup(self) -> BackupInfo: ...

    def restore_window(self) -> RestoreWindow:
        """Make sure everything committed so far is archived (local: pg_switch_wal() and wait for
        the archiver), then report the restorable window."""
        ...

    # ---- the source database -----------------------------------------------------------------
    def prepare_app_data(self, table: str, rows: int) -> AppDataState:
        """(Re)create `table` with `rows` generated rows of known content."""
        ...

    def add_app_rows(self, table: str, rows: int) -> AppDataState: ...

    def app_data_state(self, table: str) -> AppDataState: ...

    def prepare_canary(self, run_id: str) -> None: ...

    def session_factory(self, run_id: str, probe: ProbeConfig) -> SessionFactory: ...

    def canary_commits(self, run_id: str) -> list[tuple[int, float]]:
        """(seq, commit time) of every canary record of the run on the source."""
        ...

    def recovery_point(self) -> RecoveryPoint: ...

    def create_disaster(self, kind: DisasterKind, table: str) -> DisasterRecord: ...

    # ---- restore -----------------------------------------------------------------------------
    def restore_to(
        self, target: RecoveryTarget, *, timeout_s: float, on_phase: PhaseCallback | None = None
    ) -> RestoredHandle:
        """Restore the newest backup plus archived WAL to `target` into a new server and promote it.

        Raises RestoreRefused (nothing created) when the target is outside the restore window or of
        an unsupported kind; TargetError when the restore itself fails (whatever it created is
        removed before raising)."""
        ...

    def restored_canary(self, handle: RestoredHandle, run_id: str) -> frozenset[int]: ...

    def restored_app_state(self, handle: RestoredHandle, table: str) -> AppDataState: ...

    def restored_newest_commit(self, handle: RestoredHandle) -> float | None:
        """Commit time of the newest transaction the restored server holds (before any new write)."""
        ...

    def restored_isolation(self, handle: RestoredHandle) -> tuple[bool, str]:
        """Whether the restored server is kept apart from the source (its own endpoint; it does not
        archive into the source's WAL archive), with what was observed."""
        ...

    def accept_write(self, handle: RestoredHandle) -> str:
        """Commit one write on the restored server; return a one-line description."""
        ...

    def drop_restored(self, handle: RestoredHandle) -> str:
        """Stop and delete the restored server; return what was done. Safe to call twice."""
        ...

    def live_restores(self) -> list[str]:
        """Names of restored servers that still exist (should be empty after every drill)."""
        ...

    def close(self) -> None: ...
