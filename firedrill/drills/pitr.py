"""The point-in-time restore drill: a human error destroys data; restore a new server from the base
backup plus archived WAL to a point before it, prove the data there is exactly right, and measure it.

Order: base backup age -> application data with known content -> canary writes -> (note a recovery
point) -> disaster at a recorded time -> archive the WAL -> restore to the target (clock starts) ->
verify canary records and application data at the target -> a write on the restored server (clock
stops) -> remove the restored server. Only a RestoreTarget is talked to, local staging or AWS.

RTO = restore start to the first acknowledged write on the restored server after its data was
verified; RPO = the disaster's commit time minus the newest commit the restored server holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from firedrill.catalogue import BUILTIN_FEATURES, DrillSpec, LocalPlan
from firedrill.drills.base import DrillRun, Objectives, round6
from firedrill.drills.exclusive import hold_lease, release_lease
from firedrill.errors import HarnessError, TargetError
from firedrill.evidence import EvidenceRecord, Measurements, Objective, Phase
from firedrill.measure import PitrCheck, check_pitr
from firedrill.staging.pg_restore import lsn_to_int
from firedrill.targets.lease import LeaseKeeper
from firedrill.targets.restore_base import (
    AppDataState,
    BackupInfo,
    DisasterKind,
    DisasterRecord,
    RecoveryPoint,
    RecoveryTarget,
    RefusalReason,
    RestoredHandle,
    RestoreRefused,
    RestoreTarget,
    RestoreWindow,
    TargetKind,
    fmt_time,
)
from firedrill.timeline import EventKind

SPEC = DrillSpec(
    name="pitr",
    summary="point-in-time restore after a mistake (DROP TABLE, DELETE), locally or RDS into a temp instance",
    feature=BUILTIN_FEATURES / "pitr.feature",
    category="restore",
    stores=("restore",),
    steps=("firedrill.steps.pitr",),
    local_plan=LocalPlan(
        starts="a PostgreSQL primary and standby with a WAL archive",
        faults="DROP TABLE / DELETE on its own table, restores beside it",
    ),
    aws_plan="firedrill.targets.aws_rds_restore:plan_target",
)


@dataclass(frozen=True, slots=True)
class PitrObjectives(Objectives):
    """RTO/RPO as for every drill, plus the age of the newest base backup. A scenario that expects
    the restore to be refused judges no RTO/RPO (there is nothing restored to measure)."""

    backup_max_age_s: float | None = 86400.0
    expect_refusal: RefusalReason | None = None

    def as_list(self) -> list[Objective]:
        items: list[Objective] = []
        if self.expect_refusal is None:
            items += [
                Objective(
                    name="rto",
                    limit=self.rto_s,
                    unit="s",
                    description="restored database accepts writes, its data verified, within "
                    f"{_human(self.rto_s)} of the restore start",
                ),
                Objective(
                    name="rpo",
                    limit=self.rpo_s,
                    unit="s",
                    description="data committed before the disaster but not restored spans at most "
                    f"{_human(self.rpo_s)}",
                ),
            ]
        if self.backup_max_age_s is not None:
            items.append(
                Objective(
                    name="backup_age",
                    limit=self.backup_max_age_s,
                    unit="s",
                    description=f"newest base backup is at most {_human(self.backup_max_age_s)} old",
                )
            )
        return items


class TargetChoice(StrEnum):
    BEFORE_DISASTER = "just before the disaster"
    NOTED_TIME = "the noted time"
    NOTED_LSN = "the noted WAL position"
    BEFORE_BACKUP = "a time before the base backup"
    BEYOND_ARCHIVE = "a time beyond the archived WAL"


@dataclass(frozen=True, slots=True)
class PitrSettings:
    baseline_s: float = 1.0  # canary writes before anything happens, so the timeline shows service
    settle_s: float = 0.5  # canary writes after the disaster: records the restore must NOT hold
    restore_timeout_s: float = 120.0
    offset_s: float = 3600.0  # how far outside the window the refused targets lie


@dataclass
class _Verified:
    canary: PitrCheck
    canary_after_target: int
    app_expected: AppDataState
    app_restored: AppDataState
    newest_commit: float | None
    write_mono: float
    write_detail: str


@dataclass
class PitrDrill:
    target: RestoreTarget
    run: DrillRun
    settings: PitrSettings = field(default_factory=PitrSettings)
    table: str = "orders"
    _backup: BackupInfo | None = None
    _backup_age_s: float | None = None
    _started: bool = False
    _app_versions: list[AppDataState] = field(default_factory=list)
    _point: RecoveryPoint | None = None
    _disaster: DisasterRecord | None = None
    _window: RestoreWindow | None = None
    _recovery: RecoveryTarget | None = None
    _restore_started: float | None = None
    _handle: RestoredHandle | None = None
    _verified: _Verified | None = None
    refusal: RestoreRefused | None = None
    _dropped: bool = False
    _lease: LeaseKeeper | None = None  # one drill per source: held from the first step to the evidence

    @property
    def objectives(self) -> PitrObjectives:
        obj = self.run.objectives
        return obj if isinstance(obj, PitrObjectives) else PitrObjectives(rto_s=obj.rto_s, rpo_s=obj.rpo_s)

    # ---- steps (each one a Gherkin step) --------------------------------------------------------
    def check_backup(self) -> BackupInfo:
        """The newest base backup and its age; a stale one is a finding (the backup_age objective)."""
        if self._backup is not None:
            return self._backup
        if self._lease is None:  # before anything else: a second drill stops here
            self._lease = hold_lease(self.target, self.run)
        self.run.target = self.target.describe()
        backup = self.target.newest_backup()
        self._backup = backup
        self._backup_age_s = max(0.0, time.time() - backup.end_time)
        size = f", {backup.size_bytes / 1e6:.1f} MB" if backup.size_bytes else ""
        self.run.check(
            "a base backup exists",
            True,
            f"{backup.label} ({backup.method}{size}), ended {fmt_time(backup.end_time)}"
            + (f" at LSN {backup.end_lsn}" if backup.end_lsn else "")
            + f", {self._backup_age_s:.1f} s old",
        )
        self.run.mark(EventKind.NOTE, f"newest base backup {backup.label} ended {fmt_time(backup.end_time)}")
        return backup

    def prepare_app_data(self, table: str, rows: int) -> None:
        self.check_backup()
        self.table = table
        state = self.target.prepare_app_data(table, rows)
        self._app_versions = [state]
        self.run.mark(
            EventKind.NOTE, f"application table {table}: {state.rows} rows, md5 {state.checksum[:12]}..."
        )

    def _ensure_started(self) -> None:
        """Canary writes start with the first action of the scenario, after a baseline of service."""
        if self._started:
            return
        self._started = True
        self.check_backup()
        self.target.prepare_canary(self.run.run_id)
        factory = self.target.session_factory(self.run.run_id, self.run.probe_config)
        self.run.start_probe("writer", factory)
        self.run.mark(EventKind.PROBES_STARTED, f"{self.run.probe_config.rate_hz:g} Hz")
        time.sleep(self.settings.baseline_s)
        if not any(s.ok for s in self.run.timeline.snapshot()[0]):
            raise TargetError("canary writes fail before any disaster: the database is not healthy")

    def note_recovery_point(self) -> RecoveryPoint:
        self._ensure_started()
        point = self.target.recovery_point()
        self._point = point
        self.run.mark(
            EventKind.NOTE,
            f"recovery point noted: {fmt_time(point.time)}" + (f", LSN {point.lsn}" if point.lsn else ""),
        )
        time.sleep(self.settings.settle_s)  # canary commits after the point, which a restore must drop
        return point

    def add_rows(self, table: str, rows: int) -> None:
        self._ensure_started()
        state = self.target.add_app_rows(table, rows)
        self._app_versions.append(state)
        self.run.mark(
            EventKind.NOTE, f"{rows} rows added to {table}: {state.rows} rows, md5 {state.checksum[:12]}..."
        )

    def disaster(self, kind: DisasterKind, table: str) -> DisasterRecord:
        self._ensure_started()
        self.run.fault = kind.value
        self.run.mark(EventKind.DISASTER, f"{kind.value} on {table}")
        record = self.target.create_disaster(kind, table)
        self._disaster = record
        affected = f", {record.rows_affected} rows" if record.rows_affected is not None else ""
        self.run.mark(
            EventKind.FAULT_RETURNED,
            f"{record.statement} committed at {fmt_time(record.commit_time)} as transaction {record.xid}"
            f"{affected}; WAL {record.lsn_before} -> {record.lsn_after}",
        )
        time.sleep(self.settings.settle_s)  # the application goes on writing after the mistake
        return record

    def restore(self, choice: TargetChoice) -> None:
        """Restore to the chosen target, verify the data there, write once, remove the server."""
        self._ensure_started()
        self.run.stop_probes()
        window = self.target.restore_window()
        self._window = window
        self._check_archive(window)
        recovery = self._resolve(choice, window)
        self._recovery = recovery
        self.run.mark(EventKind.RESTORE_STARTED, f"to {recovery.description}")
        self._restore_started = time.monotonic()
        try:
            self._handle = self.target.restore_to(
                recovery,
                timeout_s=self.settings.restore_timeout_s,
                on_phase=lambda detail: self.run.mark(EventKind.RESTORE_PHASE, detail),
            )
        except RestoreRefused as exc:
            self._refused(exc)
            return
        self.verify()
        self.drop()

    def verify(self) -> None:
        handle, recovery = self._require_handle()
        commits = self.target.canary_commits(self.run.run_id)
        present = self.target.restored_canary(handle, self.run.run_id)
        canary = check_pitr(commits, present, recovery.cutoff_time, inclusive=recovery.inclusive)
        after = sum(
            1
            for _, w in commits
            if (w > recovery.cutoff_time if recovery.inclusive else w >= recovery.cutoff_time)
        )
        expected_app = self._expected_app(recovery)
        restored_app = self.target.restored_app_state(handle, expected_app.table)
        newest = self.target.restored_newest_commit(handle)
        self._check_data(recovery, canary, after, expected_app, restored_app, newest)
        ok, isolation = self.target.restored_isolation(handle)
        self.run.check("restored server is isolated from the source", ok, isolation)
        self.run.mark(
            EventKind.VERIFIED,
            f"canary {canary.present_expected}/{canary.expected}, "
            f"{expected_app.table} {restored_app.rows} rows",
        )
        detail = self.target.accept_write(handle)
        write_mono = time.monotonic()
        self.run.check("restored server accepts writes", True, detail)
        self.run.mark(EventKind.RECOVERED, detail)
        self.run.mark(EventKind.RESTORE_DONE, f"restored to {recovery.description} on {handle.address}")
        self._verified = _Verified(canary, after, expected_app, restored_app, newest, write_mono, detail)

    def drop(self) -> None:
        if self._handle is None or self._dropped:
            return
        self._dropped = True
        detail = self.target.drop_restored(self._handle)
        left = self.target.live_restores()
        self.run.check(
            "restored server removed", not left, detail + (f"; still present: {left}" if left else "")
        )
        self.run.mark(EventKind.NOTE, detail)

    # ---- the parts --------------------------------------------------------------------------------
    def _check_archive(self, window: RestoreWindow) -> None:
        if self._disaster is None:
            self.run.check("WAL archived", True, window.detail)
            return
        ok = window.latest_time >= self._disaster.commit_time
        self.run.check(
            "WAL archived past the disaster",
            ok,
            f"archive covers commits up to {fmt_time(window.latest_time)}; disaster committed "
            f"{fmt_time(self._disaster.commit_time)}; {window.detail}",
        )

    def _resolve(self, choice: TargetChoice, window: RestoreWindow) -> RecoveryTarget:
        kinds = self.target.supported_target_kinds()
        if choice is TargetChoice.BEFORE_DISASTER:
            d = self._require_disaster()
            what = f"just before the disaster ({d.statement}, transaction {d.xid})"
            if TargetKind.XID in kinds and d.xid is not None:
                return RecoveryTarget.before_xid(d.xid, d.commit_time, what)
            # Without transaction targets: the last microsecond before the disaster's commit.
            return RecoveryTarget.at_time(d.commit_time - 1e-6, what)
        if choice in (TargetChoice.NOTED_TIME, TargetChoice.NOTED_LSN):
            point = self._point
            if point is None:
                raise HarnessError("no recovery point was noted before the restore")
            if choice is TargetChoice.NOTED_LSN:
                if point.lsn is None or TargetKind.LSN not in kinds:
                    raise HarnessError("this target cannot restore to a WAL position (LSN)")
                return RecoveryTarget.before_lsn(point.lsn, point.time, f"the noted WAL position {point.lsn}")
            return RecoveryTarget.at_time(point.time, f"the noted time {fmt_time(point.time)}")
        if choice is TargetChoice.BEFORE_BACKUP:
            when = window.earliest_time - self.settings.offset_s
            return RecoveryTarget.at_time(when, f"{_human(self.settings.offset_s)} before the base backup")
        when = window.latest_time + self.settings.offset_s
        return RecoveryTarget.at_time(when, f"{_human(self.settings.offset_s)} beyond the archived WAL")

    def _refused(self, exc: RestoreRefused) -> None:
        self.refusal = exc
        expected = self.objectives.expect_refusal
        self.run.mark(EventKind.NOTE, f"restore refused: {exc}")
        if expected is None:
            raise exc  # an unexpected refusal is an error of the drill, recorded by the step
        self.run.check(
            f"restore refused: target {_REASON_TEXT[expected]}",
            exc.reason is expected,
            f"{exc.reason}: {exc}",
        )
        left = self.target.live_restores()
        self.run.check("no restored server left behind", not left, ", ".join(left) or "none created")

    def _expected_app(self, recovery: RecoveryTarget) -> AppDataState:
        """The application table as it was at the target: its last change committed before it."""
        before = [
            v
            for v in self._app_versions
            if (v.at_time <= recovery.cutoff_time if recovery.inclusive else v.at_time < recovery.cutoff_time)
        ]
        if recovery.kind is TargetKind.LSN:
            cut = lsn_to_int(recovery.value)
            before = [v for v in self._app_versions if v.lsn is not None and lsn_to_int(v.lsn) <= cut]
        if before:
            return before[-1]
        return AppDataState(table=self.table, exists=False, rows=0, checksum="", at_time=recovery.cutoff_time)

    def _check_data(
        self,
        recovery: RecoveryTarget,
        canary: PitrCheck,
        after: int,
        expected: AppDataState,
        restored: AppDataState,
        newest: float | None,
    ) -> None:
        cut = f"{'at or ' if recovery.inclusive else ''}before {fmt_time(recovery.cutoff_time)}"
        missing = ", ".join(map(str, canary.missing[:20]))
        self.run.check(
            "every canary record committed before the target is present",
            not canary.missing and canary.expected > 0,
            f"{canary.present_expected}/{canary.expected} committed {cut} present"
            + (f"; missing seq {missing}" if missing else "")
            + ("; none expected: restore not proven" if canary.expected == 0 else ""),
        )
        unexpected = ", ".join(map(str, canary.unexpected[:20]))
        self.run.check(
            "no canary record committed after the target is present",
            not canary.unexpected and after > 0,
            f"{len(canary.unexpected)} of {after} committed after the target present"
            + (f": seq {unexpected}" if unexpected else "")
            + ("; none was committed after it: not proven" if after == 0 else ""),
        )
        t = expected.table
        self.run.check(
            f"table {t}: row count as at the target",
            expected.exists == restored.exists and expected.rows == restored.rows,
            f"expected {_rows(expected)}, restored {_rows(restored)}",
        )
        self.run.check(
            f"table {t}: content checksum as at the target",
            expected.checksum == restored.checksum and expected.exists == restored.exists,
            f"expected md5 {expected.checksum or '-'}, restored md5 {restored.checksum or '-'}",
        )
        if newest is not None:
            in_range = newest <= recovery.cutoff_time if recovery.inclusive else newest < recovery.cutoff_time
            backup = self._backup
            self.run.check(
                "recovered range ends at the target",
                in_range,
                f"from the backup end {fmt_time(backup.end_time) if backup else '?'} to the newest recovered "
                f"commit {fmt_time(newest)}; target {recovery.description} ({cut})",
            )

    # ---- the whole drill ----------------------------------------------------------------------------
    def conclude(self) -> EvidenceRecord:
        """Remove any restored server, measure, write evidence. Never raises."""
        if self.run.evidence is not None:
            return self.run.evidence
        self.run.stop_probes()
        try:
            self.drop()
        except HarnessError as exc:
            self.run.check(
                "restored server removed", False, str(exc).splitlines()[0] if str(exc) else "failed"
            )
            self.run.record_failure(exc)
        try:
            self.run.target = self.target.describe()  # now with the restored server(s) listed
        except HarnessError as exc:
            self.run.record_failure(exc)
        measurements, values = self._measure()
        record = self.run.finish(measurements, values)
        release_lease(self._lease)
        self._lease = None
        return record

    def _measure(self) -> tuple[Measurements, dict[str, float | None]]:
        samples, _ = self.run.timeline.snapshot()
        acked = sum(1 for s in samples if s.ok)
        failed = sum(1 for s in samples if not s.ok)
        v, h, t0 = self._verified, self._handle, self._restore_started
        rto = v.write_mono - t0 if v and t0 is not None else None
        rpo = None
        if v and v.newest_commit is not None and self._disaster is not None:
            rpo = max(0.0, self._disaster.commit_time - v.newest_commit)
        phases: list[Phase] = []
        if h and t0 is not None:
            # On the report's clock: seconds from the disaster, like its event table and chart.
            anchor = self._anchor() or t0
            phases = [_phase(p.name, p.start_mono, p.end_mono, anchor) for p in h.phases]
            if v:
                phases.append(_phase("verification", h.ready_mono, v.write_mono, anchor))
        m = Measurements(
            rto_s=round6(rto),
            recovered=None if h is None and self.refusal is not None else v is not None,
            rpo_window_s=round6(rpo),
            acknowledged_writes=acked if samples else None,
            lost_writes=len(v.canary.missing) if v else None,
            lost_seqs=list(v.canary.missing) if v else [],
            failed_writes=failed if samples else None,
            recovered_node=h.address if h else None,
            phases=phases,
            extra=self._extra(rpo),
        )
        return m, {"rto": rto, "rpo": rpo, "backup_age": self._backup_age_s}

    def _anchor(self) -> float | None:
        event = self.run.timeline.first(EventKind.DISASTER)
        return event.mono if event else None

    def _extra(self, rpo: float | None) -> dict[str, float | int | str | bool | None]:
        x: dict[str, float | int | str | bool | None] = {}
        b, w, d, r, h, v = (
            self._backup,
            self._window,
            self._disaster,
            self._recovery,
            self._handle,
            self._verified,
        )
        if b:
            x |= {
                "backup_label": b.label,
                "backup_method": b.method,
                "backup_end_time": fmt_time(b.end_time),
                "backup_end_lsn": b.end_lsn,
                "backup_age_s": round6(self._backup_age_s),
            }
        if w:
            x |= {
                "restorable_from": fmt_time(w.earliest_time),
                "restorable_until": fmt_time(w.latest_time),
                "archive": w.detail,
            }
        if d:
            x |= {
                "disaster": d.statement,
                "disaster_transaction": d.xid,
                "disaster_commit_time": fmt_time(d.commit_time),
                "disaster_lsn": d.lsn_before,
            }
        if r:
            x |= {
                "recovery_target": r.description,
                "recovery_target_setting": f"recovery_target_{r.kind.value} = "
                f"'{r.value}', inclusive {'on' if r.inclusive else 'off'}",
                "target_cutoff_time": fmt_time(r.cutoff_time),
            }
        if h:
            x |= {
                "restored_server": f"{h.name} at {h.address}",
                "recovery_stop_point": h.stop_point,
                "restored_timeline": h.timeline,
            }
            anchor, t0 = self._anchor(), self._restore_started
            if anchor is not None and t0 is not None:
                x["phases_measured_from"] = f"the disaster; the restore started at +{t0 - anchor:.3f} s"
                if v:
                    x["disaster_to_service_s"] = round6(v.write_mono - anchor)
        if v:
            newest = fmt_time(v.newest_commit) if v.newest_commit is not None else None
            x |= {
                "newest_recovered_commit": newest,
                "recovered_range": f"{fmt_time(b.end_time) if b else '?'} .. {newest}",
                "canary_expected": v.canary.expected,
                "canary_restored": v.canary.present_expected,
                "canary_after_target": v.canary_after_target,
                "canary_after_target_restored": len(v.canary.unexpected),
                "app_table": v.app_expected.table,
                "app_rows_expected": v.app_expected.rows,
                "app_rows_restored": v.app_restored.rows,
                "app_md5_expected": v.app_expected.checksum,
                "app_md5_restored": v.app_restored.checksum,
                "rpo_definition": "disaster commit time - newest recovered commit",
            }
            x["rto_definition"] = "restore start to the first write acknowledged after verification"
        if self.refusal is not None:
            x |= {"refused": str(self.refusal), "refusal_reason": self.refusal.reason.value}
        return x

    def _require_disaster(self) -> DisasterRecord:
        if self._disaster is None:
            raise HarnessError("no disaster happened before the restore to 'just before the disaster'")
        return self._disaster

    def _require_handle(self) -> tuple[RestoredHandle, RecoveryTarget]:
        if self._handle is None or self._recovery is None:
            raise HarnessError("nothing was restored")
        return self._handle, self._recovery


_REASON_TEXT = {
    RefusalReason.BEFORE_BACKUP: "before the base backup",
    RefusalReason.BEYOND_ARCHIVE: "beyond the archived WAL",
    RefusalReason.UNSUPPORTED: "not supported",
}


def _human(seconds: float) -> str:
    """'24 hours', '15 minutes', '90 s': how an objective reads in the report."""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0 and (unit != "day" or seconds > 86400):
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} s"


def _rows(state: AppDataState) -> str:
    return f"{state.rows} rows" if state.exists else "no table"


def _phase(name: str, start: float, end: float, t0: float) -> Phase:
    return Phase(
        name=name, start_s=round(start - t0, 6), end_s=round(end - t0, 6), duration_s=round(end - start, 6)
    )
