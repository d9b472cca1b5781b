"""Steps of the point-in-time restore drill: one call into drills/pitr.py each.

The fixtures live here (not in conftest.py): `pitr_target`, one staging with a base backup per
feature module, and `pitr_holder`, the drill of one scenario, whose evidence is written at teardown
whatever happened. Objectives come from the scenario's Then steps, read before the first step runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import pytest
from pytest_bdd import given, parsers, then, when

from firedrill.config import Profile
from firedrill.drills.base import DrillRun
from firedrill.drills.pitr import PitrDrill, PitrObjectives, PitrSettings, TargetChoice
from firedrill.evidence import EvidenceRecord
from firedrill.manifest import append_manifest
from firedrill.probes import ProbeConfig
from firedrill.run_context import RunContext
from firedrill.steps.holder import SCENARIO
from firedrill.steps.objectives import (
    BACKUP_AGE,
    PITR_RPO,
    PITR_RTO,
    REFUSED,
    age_seconds,
    pitr_objectives_from_steps,
)
from firedrill.targets.factory import open_restore_target
from firedrill.targets.restore_base import DisasterKind, RefusalReason, RestoreTarget

log = logging.getLogger(__name__)
T = TypeVar("T")
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


@dataclass
class PitrHolder:
    profile: Profile
    ctx: RunContext
    objectives: PitrObjectives
    scenario: str
    rate_hz: float | None = None
    drill: PitrDrill | None = None

    def start(self, target: RestoreTarget) -> PitrDrill:
        if self.drill is None:
            probe = ProbeConfig(
                rate_hz=self.rate_hz or self.profile.probe.rate_hz,
                op_timeout_s=self.profile.probe.op_timeout_s,
            )
            run = DrillRun(
                drill="pitr",
                scenario=self.scenario,
                ctx=self.ctx,
                objectives=self.objectives,
                probe_config=probe,
            )
            settings = PitrSettings(restore_timeout_s=self.profile.recovery_timeout_s)
            self.drill = PitrDrill(target, run, settings)
        return self.drill

    def act(self, action: Callable[[PitrDrill], T]) -> T:
        """Run one step's action; an exception is recorded in the evidence, then fails the step."""
        if self.drill is None:
            pytest.fail("no drill environment was set up by a Given step")
        try:
            return action(self.drill)
        except (Exception, KeyboardInterrupt) as exc:
            if not isinstance(exc, AssertionError):
                self.drill.run.record_failure(exc)
            raise

    def conclude(self) -> EvidenceRecord:
        assert self.drill is not None, "no drill ran in this scenario"
        return self.drill.conclude()

    def record(self) -> EvidenceRecord:
        """The evidence, for a Then step; a drill error fails every Then step, naming it."""
        record = self.conclude()
        if record.error:
            raise AssertionError(f"drill error: {record.error} (evidence: {self._where()})")
        return record

    def _where(self) -> Path | None:
        return self.drill.run.evidence_path if self.drill else None

    def assert_met(self, objective: str) -> None:
        record = self.record()
        for v in record.verdicts:
            if v.objective == objective:
                measured = "not measured" if v.measured is None else f"{v.measured:.3f} {v.unit}"
                assert v.met, (
                    f"{objective} NOT met: measured {measured}, limit {v.limit:g} {v.unit} ({self._where()})"
                )
                return
        raise AssertionError(f"objective {objective} was not judged")

    def assert_checks(self, *names: str) -> None:
        record = self.record()
        by_name = {c.name: c for c in record.checks}
        for name in names:
            check = by_name.get(name)
            assert check is not None, f"check {name!r} was not made ({self._where()})"
            assert check.passed, f"{name}: {check.detail} ({self._where()})"


def _scenario_of(request: pytest.FixtureRequest) -> tuple[str, list[str]]:
    """The scenario's name and Then step texts, stashed by the plugin's before-scenario hook."""
    default: tuple[str, list[str]] = (request.node.name, [])
    scenario: tuple[str, list[str]] = request.node.stash.get(SCENARIO, default)
    return scenario


@pytest.fixture(scope="module")
def pitr_target(profile: Profile) -> Iterator[RestoreTarget]:
    with open_restore_target(profile) as target:
        yield target


@pytest.fixture
def pitr_holder(
    request: pytest.FixtureRequest, profile: Profile, run_context: RunContext
) -> Iterator[PitrHolder]:
    name, texts = _scenario_of(request)
    base = PitrObjectives(
        rto_s=profile.objectives.rto_s,
        rpo_s=profile.objectives.rpo_s,
        backup_max_age_s=profile.objectives.backup_max_age_s,
    )
    holder = PitrHolder(
        profile=profile, ctx=run_context, objectives=pitr_objectives_from_steps(texts, base), scenario=name
    )
    yield holder
    if holder.drill is None:
        return
    holder.drill.conclude()  # evidence for every scenario, passed or failed
    manifest = request.config.getoption("firedrill_manifest")
    path = holder.drill.run.evidence_path
    if manifest and path:
        append_manifest(Path(manifest), {"evidence": str(path)})


# ---- Given ------------------------------------------------------------------------------------------
@given("a PostgreSQL database with a WAL archive and a base backup in the drill environment")
def pitr_environment(pitr_holder: PitrHolder, pitr_target: RestoreTarget) -> None:
    """Opens a PostgreSQL server with a WAL archive and a base backup (AWS: an RDS instance with automated
    backups)."""
    pitr_holder.start(pitr_target)
    pitr_holder.act(lambda d: d.check_backup())


@given(parsers.parse('an application table "{table}" with {rows:d} rows of known content'))
def pitr_app_table(pitr_holder: PitrHolder, table: str, rows: int) -> None:
    """Creates the application table with N rows of known content (row count and md5 are noted)."""
    pitr_holder.act(lambda d: d.prepare_app_data(table, rows))


@given(parsers.parse("canary writes at {rate:g} per second with commit timestamps"))
def pitr_canary_rate(pitr_holder: PitrHolder, rate: float) -> None:
    """Sets the canary's write rate; each canary row keeps its commit timestamp."""

    def configure(d: PitrDrill) -> None:
        d.run.probe_config = replace(d.run.probe_config, rate_hz=rate)

    pitr_holder.act(configure)


# ---- When -------------------------------------------------------------------------------------------
@when(parsers.parse('the table "{table}" is dropped by mistake'))
def pitr_drop_table(pitr_holder: PitrHolder, table: str) -> None:
    """The disaster: DROP TABLE of the application table."""
    pitr_holder.act(lambda d: d.disaster(DisasterKind.DROP_TABLE, table))


@when(parsers.parse('every row of "{table}" is deleted by a DELETE without a WHERE clause'))
def pitr_delete_all(pitr_holder: PitrHolder, table: str) -> None:
    """The disaster: DELETE of every row of the application table, without WHERE."""
    pitr_holder.act(lambda d: d.disaster(DisasterKind.DELETE_ALL, table))


@when("a recovery point is noted")
def pitr_note_point(pitr_holder: PitrHolder) -> None:
    """Notes the current time and WAL position (LSN) as a recovery point."""
    pitr_holder.act(lambda d: d.note_recovery_point())


@when(parsers.parse('{rows:d} more rows are added to "{table}"'))
def pitr_add_rows(pitr_holder: PitrHolder, rows: int, table: str) -> None:
    """Adds N more legitimate rows after the noted point (a restore to the point must not have them)."""
    pitr_holder.act(lambda d: d.add_rows(table, rows))


@when(
    parsers.re(
        r"the database is restored to "
        r"(?P<choice>just before the mistake|the noted time|the noted WAL position)"
    )
)
def pitr_restore_to(pitr_holder: PitrHolder, choice: str) -> None:
    """Restores into a new server beside the original, to the chosen target, and promotes it."""
    target = {
        "just before the mistake": TargetChoice.BEFORE_DISASTER,
        "the noted time": TargetChoice.NOTED_TIME,
        "the noted WAL position": TargetChoice.NOTED_LSN,
    }[choice]
    pitr_holder.act(lambda d: d.restore(target))


@when(
    parsers.re(
        r"the database is restored to a time "
        r"(?P<amount>\d+(?:\.\d+)?) (?P<unit>seconds?|minutes?|hours?|days?) "
        r"(?P<where>before the base backup|beyond the archived WAL)"
    )
)
def pitr_restore_outside(pitr_holder: PitrHolder, amount: str, unit: str, where: str) -> None:
    """Asks for a restore to a target outside the recoverable window (it must be refused)."""

    def restore(d: PitrDrill) -> None:
        d.settings = replace(d.settings, offset_s=age_seconds(amount, unit))
        choice = (
            TargetChoice.BEFORE_BACKUP if where == "before the base backup" else TargetChoice.BEYOND_ARCHIVE
        )
        d.restore(choice)

    pitr_holder.act(restore)


# ---- Then -------------------------------------------------------------------------------------------
@then(
    parsers.re(
        r"the restored database holds every canary record committed (?:before|up to) the target "
        r"and none after it"
    )
)
def pitr_canary_at_target(pitr_holder: PitrHolder) -> None:
    """Every canary row committed up to the target is restored, and none after it."""
    pitr_holder.assert_checks(
        "every canary record committed before the target is present",
        "no canary record committed after the target is present",
        "recovered range ends at the target",
    )


@then(parsers.parse('the table "{table}" has the row count and checksum it had at the target'))
def pitr_app_at_target(pitr_holder: PitrHolder, table: str) -> None:
    """The application table has the row count and md5 it had at the target."""
    pitr_holder.assert_checks(
        f"table {table}: row count as at the target", f"table {table}: content checksum as at the target"
    )


@then(parsers.re(PITR_RTO.pattern))
def pitr_restored_in_time(pitr_holder: PitrHolder) -> None:
    """RTO of the restore: from its start to the first acknowledged write on the restored server."""
    pitr_holder.assert_checks("restored server accepts writes", "restored server is isolated from the source")
    pitr_holder.assert_met("rto")


@then(parsers.re(PITR_RPO.pattern))
def pitr_bounded_loss(pitr_holder: PitrHolder) -> None:
    """RPO of the restore: the data between the target and the disaster is at most this long."""
    pitr_holder.assert_met("rpo")


@then(parsers.re(BACKUP_AGE.pattern))
def pitr_backup_fresh(pitr_holder: PitrHolder) -> None:
    """The newest base backup is no older than the given age (30-day retention promises need this)."""
    pitr_holder.assert_met("backup_age")


@then(parsers.re(REFUSED.pattern))
def pitr_refused(pitr_holder: PitrHolder, why: str) -> None:
    """The restore was refused for the stated reason, and nothing was restored."""
    record = pitr_holder.record()
    drill = pitr_holder.drill
    assert drill is not None and drill.refusal is not None, "the restore was not refused"
    expected = RefusalReason.BEFORE_BACKUP if why == "before the backup" else RefusalReason.BEYOND_ARCHIVE
    assert drill.refusal.reason is expected, f"refused for another reason: {drill.refusal}"
    stamps = _ISO.findall(str(drill.refusal))
    assert len(stamps) >= 2, f"the refusal does not name both times: {drill.refusal}"
    assert record.verdict == "passed", f"verdict {record.verdict} ({pitr_holder._where()})"


@then("no restored server is left behind")
def pitr_nothing_left(pitr_holder: PitrHolder) -> None:
    """Every restored server and its data directory (AWS: temporary instance) is gone."""
    record = pitr_holder.record()
    names = {c.name for c in record.checks}
    wanted = (
        "restored server removed" if "restored server removed" in names else "no restored server left behind"
    )
    pitr_holder.assert_checks(wanted)
    drill = pitr_holder.drill
    assert drill is not None and not drill.target.live_restores(), "a restored server still exists"
