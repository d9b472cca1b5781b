"""RestoreTarget over Amazon RDS for PostgreSQL: point-in-time restore into a temporary instance.

The source is the profile's Multi-AZ DB instance. A restore is
`restore_db_instance_to_point_in_time` into a new instance `firedrill-<run id>-<n>`, tagged with the
run id, an expiry and the non-production tag (so `firedrill aws cleanup` finds it if everything else
fails), followed with a deadline and a log line per status change until it is available and accepts a
connection. The temporary instance is ALWAYS deleted: by the drill (`drop_restored`), when the restore
itself fails or is interrupted (before the exception leaves `restore_to`), and by `close()`.

The PostgreSQL side (application table, checksums, disaster statements, commit timestamps) is the same
SQL the local adapter runs (`firedrill.targets.local_pitr`), over connections to the RDS endpoints.
RDS restores to a time only (no LSN or transaction targets) and needs `track_commit_timestamp = 1` in
the source's DB parameter group for the canary's commit times.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from firedrill.aws.cleanup import delete_temporary_instance, find_leftovers, wait_deleted
from firedrill.aws.errors import aws_call
from firedrill.aws.guardrails import Identity, check_account, expiry, temp_tags
from firedrill.aws.session import AwsSession, WaitPolicy, aws_settings, parse_endpoint, wait_for
from firedrill.config import Profile, RdsSettings
from firedrill.errors import ConfigError, DeadlineExceeded, HarnessError, TargetError
from firedrill.evidence import Node, new_run_id
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.targets import pg_canary
from firedrill.targets.aws_lease import TagLease, rds_lease
from firedrill.targets.aws_rds import MultiAzInstance, endpoint_for
from firedrill.targets.base import Change, TargetDescription
from firedrill.targets.local_pitr import (
    CHECK_TABLE,
    Conn,
    RestoredReads,
    add_rows,
    app_state,
    canary_commits,
    create_app_table,
    run_disaster,
    translated,
)
from firedrill.targets.pg_canary import PgCanarySession, PgEndpoint
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

log = logging.getLogger(__name__)

PURPOSE = "pitr-restore"
_ID_CHARS = re.compile(r"[^a-z0-9-]+")


def temp_instance_id(run_id: str, n: int) -> str:
    """A valid DB instance id (letters, digits, single hyphens, <= 63) that says it is firedrill's."""
    body = re.sub("-{2,}", "-", _ID_CHARS.sub("-", run_id.lower())).strip("-")
    suffix = f"-{n}"
    return f"firedrill-{body}"[: 63 - len(suffix)].rstrip("-") + suffix


@dataclass(frozen=True, slots=True)
class BackupCheck:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'ok ' if self.passed else 'NOT'} {self.name}: {self.detail}"


@dataclass
class _Live:
    handle: RestoredHandle | None
    instance_id: str


class RdsRestoreTarget(RestoredReads):
    """Implements firedrill.targets.restore_base.RestoreTarget for a Multi-AZ RDS DB instance."""

    def __init__(
        self,
        session: AwsSession,
        settings: RdsSettings,
        source: MultiAzInstance,
        endpoint: PgEndpoint,
        *,
        identity: Identity,
        guard: str,
        run_id: str,
    ) -> None:
        self._session = session
        self._settings = settings
        self._source = source
        self._endpoint = endpoint
        self.identity = identity
        self.guardrail = guard
        self.label = source.label
        self.run_id = run_id
        self._window: RestoreWindow | None = None
        self._live: dict[str, _Live] = {}
        self._history: list[Node] = []
        self._counter = 0

    # ---- description ---------------------------------------------------------------------------
    def _source_row(self) -> dict[str, object]:
        with aws_call("rds:DescribeDBInstances", self._source.source_id):
            rows = self._session.rds().describe_db_instances(DBInstanceIdentifier=self._source.source_id)
        return dict(rows["DBInstances"][0])

    def describe(self) -> TargetDescription:
        view = self._source.observe()
        host, port = self._endpoint.hosts[0]
        s = self._session.settings
        retention = self._source_row().get("BackupRetentionPeriod", "?")
        promised = self._settings.restore.required_retention_days
        password = self._settings.password.reference() if self._settings.password else "none"
        return TargetDescription(
            kind="postgres",
            environment_kind="aws",
            servers={"postgresql": view.engine_version, "service": "Amazon RDS"},
            nodes=(
                Node(
                    name=view.writer,
                    role="primary (source)",
                    address=f"{host}:{port}",
                    version=view.engine_version,
                ),
                *self._history,
            ),
            settings={
                "resource": self.label,
                "region": s.region,
                "account": self.identity.account,
                "caller": self.identity.arn,
                "backup_retention_days": f"{retention} (promised {promised})",
                "restore": "restore_db_instance_to_point_in_time into a temporary instance, deleted after",
                "restore_instance_class": self._settings.restore.instance_class or view.instance_class,
                "password": password,  # the reference only
                "guardrail": self.guardrail,
            },
        )

    def drill_lease(self) -> TagLease:
        """One drill per source instance at a time: a `firedrill:lease` tag on it."""
        return rds_lease(self._session, self._source.source_type, self._source.source_id, self.label)

    def supported_target_kinds(self) -> frozenset[TargetKind]:
        return frozenset({TargetKind.TIME})

    # ---- backups and the restorable window -----------------------------------------------------
    def newest_backup(self) -> BackupInfo:
        src = self._source.source_id
        with aws_call("rds:DescribeDBSnapshots", src):
            snaps = self._session.rds().describe_db_snapshots(
                DBInstanceIdentifier=src, SnapshotType="automated"
            )
        done = [
            s for s in snaps["DBSnapshots"] if s.get("Status") == "available" and "SnapshotCreateTime" in s
        ]
        if not done:
            raise TargetError(f"{self.label} has no available automated snapshot (are automated backups on?)")
        newest = max(done, key=lambda s: s["SnapshotCreateTime"])
        when = newest["SnapshotCreateTime"].timestamp()
        size = newest.get("AllocatedStorage")
        return BackupInfo(
            label=newest.get("DBSnapshotIdentifier", "?"),
            start_time=when,
            end_time=when,
            method="RDS automated snapshot + transaction logs",
            size_bytes=size * 1024**3 if size else None,  # allocated, not used: an upper bound
        )

    def backup_checks(self) -> list[BackupCheck]:
        """Retention and the age of LatestRestorableTime against the profile's promises."""
        row = self._source_row()
        retention = int(str(row.get("BackupRetentionPeriod", 0)))
        promised = self._settings.restore.required_retention_days
        checks = [
            BackupCheck(
                "backup retention covers the promised window",
                retention >= promised,
                f"BackupRetentionPeriod {retention} days, promised {promised} days",
            )
        ]
        latest = row.get("LatestRestorableTime")
        if isinstance(latest, datetime):
            lag = max(0.0, time.time() - latest.timestamp())
            checks.append(
                BackupCheck(
                    "LatestRestorableTime is recent",
                    lag <= 600,
                    f"LatestRestorableTime {fmt_time(latest.timestamp())}, {lag:.0f} s ago "
                    "(RDS ships transaction logs every 5 minutes)",
                )
            )
        else:
            checks.append(BackupCheck("LatestRestorableTime is recent", False, "RDS reports none"))
        return checks

    def plan_checks(self) -> list[str]:
        return [c.line() for c in self.backup_checks()]

    def _earliest(self) -> float | None:
        src = self._source.source_id
        with aws_call("rds:DescribeDBInstanceAutomatedBackups", src):
            rows = self._session.rds().describe_db_instance_automated_backups(DBInstanceIdentifier=src)
        earliest = [
            b["RestoreWindow"]["EarliestTime"].timestamp()
            for b in rows.get("DBInstanceAutomatedBackups", [])
            if "EarliestTime" in b.get("RestoreWindow", {})
        ]
        return min(earliest) if earliest else None

    def restore_window(self) -> RestoreWindow:
        """Wait (with a deadline) until RDS's LatestRestorableTime passes the moment of the call, so
        every commit made so far can be restored; then report the window and the retention."""
        with self._source_conn("reading the server clock") as conn:
            row = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
        needed = float(str(row[0])) if row else time.time()
        latest_seen: list[float] = []

        def poll() -> tuple[bool, str]:
            latest = self._source_row().get("LatestRestorableTime")
            if not isinstance(latest, datetime):
                return False, "no LatestRestorableTime yet"
            latest_seen.append(latest.timestamp())
            behind = needed - latest.timestamp()
            return (
                behind <= 0,
                f"LatestRestorableTime {fmt_time(latest.timestamp())} ({max(behind, 0):.0f} s behind)",
            )

        policy = WaitPolicy(self._session.settings.poll_delay_s, self._settings.restore.archive_timeout_s)
        status, waited = wait_for(f"{self.label} transaction logs", poll, policy, logger=log)
        backup = self.newest_backup()
        row2 = self._source_row()
        retention = float(str(row2.get("BackupRetentionPeriod", 0)))
        earliest = self._earliest()
        if earliest is None:
            earliest = max(backup.end_time - retention * 86400, 0.0) if retention else backup.end_time
        checks = "; ".join(c.line() for c in self.backup_checks())
        self._window = RestoreWindow(
            newest_backup=backup,
            earliest_time=earliest,
            latest_time=latest_seen[-1],
            retention_days=retention,
            detail=f"{status} after waiting {waited:.0f} s; {checks}",
        )
        return self._window

    # ---- the source database -------------------------------------------------------------------
    @contextmanager
    def _source_conn(self, what: str) -> Iterator[Conn]:
        with translated(f"{what} on {self.label}"), self._endpoint.connect() as conn:
            yield conn

    def prepare_app_data(self, table: str, rows: int) -> AppDataState:
        with self._source_conn(f"creating application table {table}") as conn:
            return create_app_table(conn, table, rows)

    def add_app_rows(self, table: str, rows: int) -> AppDataState:
        with self._source_conn(f"adding rows to {table}") as conn:
            return add_rows(conn, table, rows)

    def app_data_state(self, table: str) -> AppDataState:
        with self._source_conn(f"reading {table}") as conn:
            return app_state(conn, table)

    def prepare_canary(self, run_id: str) -> None:
        self.run_id = run_id  # the restored instances are tagged with the drill's run id
        with self._source_conn("creating the canary table") as conn:
            setting = conn.execute("SHOW track_commit_timestamp").fetchone()
            if not setting or str(setting[0]) != "on":
                raise TargetError(
                    f"track_commit_timestamp is off on {self.label}: set it to 1 in the DB parameter group "
                    "(a static parameter: it needs a reboot); the drill dates canary commits with it",
                    code="TrackCommitTimestampOff",
                )
            pg_canary.prepare_canary(conn)

    def session_factory(self, run_id: str, probe: ProbeConfig) -> SessionFactory:
        endpoint = self._endpoint
        return lambda: PgCanarySession(endpoint, run_id, probe)

    def canary_commits(self, run_id: str) -> list[tuple[int, float]]:
        with self._source_conn("reading canary commit timestamps") as conn:
            return canary_commits(conn, run_id)

    def recovery_point(self) -> RecoveryPoint:
        with self._source_conn("noting a recovery point") as conn:
            row = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
        assert row is not None
        return RecoveryPoint(time=float(str(row[0])))

    def create_disaster(self, kind: DisasterKind, table: str) -> DisasterRecord:
        with self._source_conn(f"{kind.value} on {table}") as conn:
            return run_disaster(conn, kind, table)

    # ---- restore -------------------------------------------------------------------------------
    def _refuse_outside(self, target: RecoveryTarget, window: RestoreWindow) -> None:
        if target.kind is not TargetKind.TIME:
            raise RestoreRefused(
                f"RDS restores to a time only, not to a {target.kind.value} ({target.value})",
                reason=RefusalReason.UNSUPPORTED,
            )
        when, subject = target.cutoff_time, f"target time {fmt_time(target.cutoff_time)}"
        if when < window.earliest_time:
            raise RestoreRefused(
                f"{subject} is before the earliest restorable time {fmt_time(window.earliest_time)} "
                f"({window.retention_days or 0:g} days of retention)",
                reason=RefusalReason.BEFORE_BACKUP,
            )
        if when > window.latest_time:
            raise RestoreRefused(
                f"{subject} is after RDS's LatestRestorableTime {fmt_time(window.latest_time)}",
                reason=RefusalReason.BEYOND_ARCHIVE,
            )

    def restore_to(
        self, target: RecoveryTarget, *, timeout_s: float, on_phase: PhaseCallback | None = None
    ) -> RestoredHandle:
        window = self._window or self.restore_window()
        self._refuse_outside(target, window)
        self._counter += 1
        iid = temp_instance_id(self.run_id, self._counter)
        restore = self._settings.restore
        src = self._source.source_id
        row = self._source_row()
        now = datetime.now(UTC)
        restore_time = datetime.fromtimestamp(target.cutoff_time, UTC)
        params: dict[str, object] = {
            "SourceDBInstanceIdentifier": src,
            "TargetDBInstanceIdentifier": iid,
            "RestoreTime": restore_time,
            "MultiAZ": False,
            "PubliclyAccessible": False,
            "DeletionProtection": False,
            "CopyTagsToSnapshot": False,
            "AutoMinorVersionUpgrade": False,
            "Tags": temp_tags(self._session.settings, self.run_id, PURPOSE, expiry(now, restore.keep_hours)),
            "DBInstanceClass": restore.instance_class or str(row.get("DBInstanceClass", "")),
        }
        if restore.subnet_group:
            params["DBSubnetGroupName"] = restore.subnet_group
        if restore.security_group_ids:
            params["VpcSecurityGroupIds"] = list(restore.security_group_ids)
        started = time.monotonic()
        with aws_call("rds:RestoreDBInstanceToPointInTime", f"{src} -> {iid}"):
            self._session.rds().restore_db_instance_to_point_in_time(**params)  # type: ignore[arg-type]
        self._live[iid] = _Live(handle=None, instance_id=iid)
        note = f"restore_db_instance_to_point_in_time {src} -> {iid} at {fmt_time(target.cutoff_time)}"
        log.info("%s", note)
        if on_phase:
            on_phase(note)
        try:
            handle = self._await_restored(iid, target, started, timeout_s, on_phase)
        except BaseException as exc:  # failure, deadline or Ctrl-C: the temporary instance goes
            log.error("restore into %s failed (%s): deleting it", iid, exc)
            with contextlib.suppress(HarnessError):
                self._drop(iid)
            raise
        self._live[iid].handle = handle
        return handle

    def _await_restored(
        self,
        iid: str,
        target: RecoveryTarget,
        started: float,
        timeout_s: float,
        on_phase: PhaseCallback | None,
    ) -> RestoredHandle:
        deadline = started + timeout_s
        statuses: list[str] = []

        def poll() -> tuple[bool, str]:
            with aws_call("rds:DescribeDBInstances", iid):
                rows = self._session.rds().describe_db_instances(DBInstanceIdentifier=iid)["DBInstances"]
            status = rows[0].get("DBInstanceStatus", "?") if rows else "missing"
            if not statuses or statuses[-1] != status:
                statuses.append(status)
                if on_phase:
                    on_phase(f"{iid}: {status}")
            if status in ("failed", "incompatible-restore", "incompatible-parameters", "storage-full"):
                raise TargetError(f"restore into {iid} ended {status}", code=status)
            return status == "available", f"status={status}"

        policy = WaitPolicy(self._session.settings.poll_delay_s, max(0.1, deadline - time.monotonic()))
        wait_for(f"restore {iid}", poll, policy, logger=log)
        available = time.monotonic()
        endpoint = self._restored_endpoint(iid)
        connected = self._await_connect(iid, endpoint, deadline)
        if on_phase:
            on_phase(f"{iid} accepts connections at {endpoint.hosts[0][0]}:{endpoint.hosts[0][1]}")
        host, port = endpoint.hosts[0]
        self._history.append(
            Node(name=iid, role="restored (temporary, deleted after the drill)", address=f"{host}:{port}")
        )
        return RestoredHandle(
            name=iid,
            address=f"{host}:{port}",
            endpoint=endpoint,
            target=target,
            started_mono=started,
            ready_mono=connected,
            phases=(
                RestorePhase(
                    "RDS restore", started, available, f"{iid} created and restored ({' -> '.join(statuses)})"
                ),
                RestorePhase("endpoint", available, connected, "DNS name resolves and accepts a connection"),
            ),
            stop_point=f"RDS restored to {fmt_time(target.cutoff_time)}",
            details={"instance": iid, "restore_time": fmt_time(target.cutoff_time), "run_id": self.run_id},
        )

    def _restored_endpoint(self, iid: str) -> PgEndpoint:
        override = self._settings.restore.endpoint
        if override:
            host, port = parse_endpoint(override, 5432)
        else:
            with aws_call("rds:DescribeDBInstances", iid):
                rows = self._session.rds().describe_db_instances(DBInstanceIdentifier=iid)["DBInstances"]
            ep = rows[0].get("Endpoint", {}) if rows else {}
            if "Address" not in ep:
                raise TargetError(f"{iid} is available but reports no endpoint")
            host, port = ep["Address"], ep.get("Port", 5432)
        return replace(self._endpoint, hosts=((host, port),))  # the source's database and credentials

    def _await_connect(self, iid: str, endpoint: PgEndpoint, deadline: float) -> float:
        last = ""
        while True:
            try:
                with endpoint.connect():
                    return time.monotonic()
            except TargetError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"{iid} is available but does not accept connections: {last}")
            time.sleep(min(self._session.settings.poll_delay_s, max(0.0, deadline - time.monotonic())))

    @contextmanager
    def _restored(self, handle: RestoredHandle, what: str) -> Iterator[Conn]:
        with translated(f"{what} on the restored instance {handle.name}"), handle.endpoint.connect() as conn:
            yield conn

    def restored_isolation(self, handle: RestoredHandle) -> tuple[bool, str]:
        src_host, src_port = self._endpoint.hosts[0]
        own = handle.endpoint.hosts[0] != (src_host, src_port) and handle.name != self._source.source_id
        detail = (
            f"separate instance {handle.name} at {handle.address} (source {src_host}:{src_port}"
            f"{'' if own else ', SAME endpoint!'}); an RDS restore never writes into the source's backups"
        )
        return own, detail

    def accept_write(self, handle: RestoredHandle) -> str:
        with self._restored(handle, "writing") as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {CHECK_TABLE} "
                "(at timestamptz NOT NULL DEFAULT clock_timestamp(), target text NOT NULL)"
            )
            conn.execute(f"INSERT INTO {CHECK_TABLE} (target) VALUES (%s)", (handle.target.description,))
        return f"write committed on the restored instance {handle.name} ({handle.address})"

    def _drop(self, iid: str) -> str:
        started = delete_temporary_instance(self._session, iid)
        waited = wait_deleted(self._session, iid, self._session.delete_wait)
        self._live.pop(iid, None)
        return f"{started}; gone after {waited:.0f} s"

    def drop_restored(self, handle: RestoredHandle) -> str:
        if handle.name not in self._live:
            return f"{handle.name} already deleted"
        return self._drop(handle.name)

    def live_restores(self) -> list[str]:
        """This run's temporary instances that still exist in AWS (any status)."""
        return [lo.instance_id for lo in find_leftovers(self._session) if lo.run_id == self.run_id]

    def plan(self, *, rate_hz: float) -> list[Change]:
        """What a PITR drill would change (for `firedrill plan`); reads state only."""
        row = self._source_row()
        restore = self._settings.restore
        cls = restore.instance_class or str(row.get("DBInstanceClass", "?"))
        iid = temp_instance_id(self.run_id, 1)
        host, port = self._endpoint.hosts[0]
        s = self._session.settings
        return [
            Change(
                "data",
                "CREATE TABLE (drop first)",
                "<application table>",
                f"firedrill's own table on {host}:{port}",
            ),
            Change(
                "data",
                "INSERT",
                pg_canary.CANARY_TABLE,
                f"~{rate_hz:g} rows/s for the drill's duration; kept",
            ),
            Change(
                "data",
                "DROP TABLE / DELETE",
                "<application table>",
                "the scenario's disaster, on firedrill's own table",
            ),
            Change(
                "aws",
                "rds:RestoreDBInstanceToPointInTime",
                f"{self._source.source_id} -> {iid}",
                f"{cls}, single-AZ, not public, tagged firedrill:managed/run-id/expires-at "
                f"(+{restore.keep_hours:g} h) and {s.nonprod_tag.key}={s.nonprod_tag.allowed[0]}; "
                "billed while it exists (typically 15-60 min)",
            ),
            Change("data", "CREATE TABLE + INSERT", CHECK_TABLE, "one write on the restored instance"),
            Change(
                "aws",
                "rds:DeleteDBInstance",
                iid,
                "SkipFinalSnapshot, DeleteAutomatedBackups; always, also on failure or Ctrl-C",
            ),
            Change(
                "wait",
                "poll DescribeDBInstances",
                iid,
                f"LatestRestorableTime (<= {restore.archive_timeout_s:g} s), restore (the drill's "
                f"deadline), deletion (<= {s.delete_timeout_s:g} s), every {s.poll_delay_s:g} s",
            ),
        ]

    def close(self) -> None:
        """Delete every temporary instance this target created and has not deleted yet."""
        for iid in list(self._live):
            try:
                self._drop(iid)
            except HarnessError as exc:
                log.error("temporary instance %s NOT deleted: %s (run `firedrill aws cleanup`)", iid, exc)


def connect_rds_restore(
    session: AwsSession, *, run_id: str | None = None, resolve_secrets: bool = True
) -> RdsRestoreTarget:
    """Guardrails first (account, then the source's tags), then the adapter."""
    settings = session.settings.rds
    if settings is None:
        raise ConfigError("the profile's aws section has no [rds] part")
    if settings.db_instance_id is None:
        raise ConfigError(
            "point-in-time restore drills need db_instance_id (Aurora clusters are not supported)"
        )
    identity = check_account(session)
    source = MultiAzInstance(session, settings.db_instance_id)
    guard = source.guard()
    view = source.observe()
    endpoint = endpoint_for(session, settings, view, source.label, resolve_secrets=resolve_secrets)
    return RdsRestoreTarget(
        session,
        settings,
        source,
        endpoint,
        identity=identity,
        guard=guard,
        run_id=run_id or new_run_id("pitr"),
    )


@contextmanager
def open_rds_restore(profile: Profile, session: AwsSession | None = None) -> Iterator[RdsRestoreTarget]:
    target = connect_rds_restore(session or AwsSession(aws_settings(profile)))
    try:
        yield target
    finally:
        target.close()


def plan_target(session: AwsSession) -> RdsRestoreTarget:
    """The restore target opened for `firedrill plan`: guardrails run, no secret is read."""
    return connect_rds_restore(session, run_id="<run id>", resolve_secrets=False)
