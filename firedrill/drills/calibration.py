"""Calibration: outages and losses whose true size is known, measured by the drills' own machinery.

The figures a drill reports come from `CanaryWriter` samples and the pure `measure_outage` /
`measure_loss`. Here the same probes and the same functions face faults whose truth is recorded
independently, on the same monotonic clock. How each case injects its fault and records that truth
(freezes, proxy cuts, known losses on PostgreSQL and Redis) is in `firedrill.drills.calibration_trials`.
This module runs the cases the settings ask for, PostgreSQL first, then Redis where it can run; the
error of a trial is measured RTO - true outage, reported signed and absolute, p50/p95/max per kind.

The result is written as one evidence record through `firedrill.drills.base.DrillRun`, like every drill (a
deliberate exception to "firedrill does not import drills": a calibration is a drill of the firedrill
itself and its evidence must look like any other).

The trial procedures belong to this module's interface too: a step or a benchmark runs a single case
as `calibration.pg_cut_trial(...)`, so they are re-exported in `__all__`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg

from firedrill.catalogue import BUILTIN_FEATURES, DrillSpec, LocalPlan
from firedrill.drills.base import DrillRun, Objectives
from firedrill.drills.calibration_trials import (
    KIND_LABELS,
    CalibrationSettings,
    Kind,
    LossCase,
    OutageTrial,
    pg_cut_trial,
    pg_freeze_trial,
    pg_known_loss,
    redis_available,
    redis_freeze_trial,
    redis_known_loss,
    redis_lab,
)
from firedrill.errors import HarnessError
from firedrill.evidence import EvidenceRecord, Measurements, Objective
from firedrill.faults.proxy import CutMode, FaultProxy
from firedrill.run_context import RunContext
from firedrill.staging.postgres import PgStaging
from firedrill.targets.base import TargetDescription
from firedrill.targets.local_postgres import LocalPostgresTarget
from firedrill.targets.local_redis import LocalRedisTarget
from firedrill.timeline import EventKind

__all__ = [
    "SPEC",
    "CalibrationObjectives",
    "CalibrationResult",
    "CalibrationRun",
    "ErrorStats",
    "Progress",
    "calibrate_postgres",
    "calibrate_redis",
    "error_stats",
    "new_run",
    "objective_name",
    "percentile",
    "pg_cut_trial",
    "pg_freeze_trial",
    "pg_known_loss",
    "record",
    "redis_freeze_trial",
    "redis_known_loss",
    "run_calibration",
    "run_trials",
]

SPEC = DrillSpec(
    name="calibration",
    summary="firedrill's own figures against injected outages and losses of known size",
    feature=BUILTIN_FEATURES / "calibration.feature",
    category="calibration",
    stores=("postgres", "redis"),
    steps=("firedrill.steps.calibration",),
    local_plan=LocalPlan(
        starts="a PostgreSQL primary and standby, a Redis master with replicas, a loopback fault proxy",
        faults="freezes, network cuts and losses of known length and size",
    ),
    in_all=False,  # `firedrill calibrate` runs it; it checks the harness, not the platform
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ErrorStats:
    n: int
    p50_s: float
    p95_s: float
    max_s: float
    min_s: float
    abs_p50_s: float
    abs_p95_s: float
    abs_max_s: float


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (a value that occurred; conservative for small samples)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def error_stats(errors: Sequence[float]) -> ErrorStats:
    absolute = [abs(e) for e in errors]
    return ErrorStats(
        n=len(errors),
        p50_s=percentile(errors, 50),
        p95_s=percentile(errors, 95),
        max_s=max(errors),
        min_s=min(errors),
        abs_p50_s=percentile(absolute, 50),
        abs_p95_s=percentile(absolute, 95),
        abs_max_s=max(absolute),
    )


@dataclass
class CalibrationResult:
    settings: CalibrationSettings
    trials: list[OutageTrial] = field(default_factory=list)
    losses: list[LossCase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def kinds(self) -> list[Kind]:
        return [k for k in Kind if any(t.kind is k for t in self.trials)]

    def stats(self, kind: Kind | None = None) -> ErrorStats | None:
        errors = [
            t.error_s for t in self.trials if t.error_s is not None and (kind is None or t.kind is kind)
        ]
        return error_stats(errors) if errors else None

    def unrecovered(self, kind: Kind) -> int:
        return sum(1 for t in self.trials if t.kind is kind and t.measured_s is None)


@dataclass(frozen=True, slots=True)
class CalibrationObjectives(Objectives):
    """The calibration's own promises: RTO error p95 per kind, and loss counts that are exact."""

    kinds: tuple[Kind, ...] = ()
    error_p95_s: float = 0.010
    loss_cases: bool = True

    def as_list(self) -> list[Objective]:
        items = [
            Objective(
                name=objective_name(kind),
                limit=self.error_p95_s,
                unit="s",
                description=f"p95 of |measured - true| RTO, {KIND_LABELS[kind]}",
            )
            for kind in self.kinds
        ]
        if self.loss_cases:
            items.append(
                Objective(
                    name="lost_writes_mismatch",
                    limit=0.0,
                    unit="writes",
                    description="known losses: lost writes reported differ from those injected",
                )
            )
        return items


def objective_name(kind: Kind) -> str:
    return f"rto_error_p95_{kind.value.replace('-', '_')}"


# ---- the whole calibration ----------------------------------------------------------------------------
Progress = Callable[[str], None]


def _describe_trial(t: OutageTrial) -> str:
    if t.measured_s is None:
        return f"{t.label}: true {t.true_s * 1000:.1f} ms, NOT recovered ({t.note})"
    return (
        f"{t.label}: true {t.true_s * 1000:.1f} ms, measured {t.measured_s * 1000:.1f} ms, "
        f"error {(t.measured_s - t.true_s) * 1000:+.1f} ms"
        + (", recovered on a new connection" if t.reconnected else ", recovered on the held call")
    )


def _describe_loss(c: LossCase) -> str:
    return (
        f"{c.label}: expected {len(c.expected)} lost (seq {_span(c.expected)}), reported "
        f"{len(c.reported)} (seq {_span(c.reported)}) of {c.acknowledged} acknowledged"
    )


def _span(seqs: Sequence[int]) -> str:
    if not seqs:
        return "none"
    if list(seqs) == list(range(seqs[0], seqs[0] + len(seqs))) and len(seqs) > 2:
        return f"{seqs[0]}..{seqs[-1]}"
    return ", ".join(map(str, seqs[:20])) + (" ..." if len(seqs) > 20 else "")


def _trial_plan(settings: CalibrationSettings, kinds: Sequence[Kind]) -> list[tuple[Kind, float, int]]:
    """Interleave durations and repetitions so slow drift in machine load spreads over every case."""
    return [
        (kind, duration, i + 1)
        for i in range(settings.trials)
        for duration in settings.durations_s
        for kind in kinds
    ]


def run_trials(
    run: DrillRun,
    result: CalibrationResult,
    plan: Sequence[tuple[Kind, float, int]],
    one: Callable[[Kind, float, int], OutageTrial],
    progress: Progress,
) -> None:
    for kind, duration, index in plan:
        trial = one(kind, duration, index)
        result.trials.append(trial)
        progress(_describe_trial(trial))


def calibrate_postgres(run: DrillRun, result: CalibrationResult, progress: Progress) -> TargetDescription:
    s = result.settings
    kinds = [k for k in s.kinds if k is not Kind.FREEZE_REDIS]
    with PgStaging() as staging:
        target = LocalPostgresTarget(staging)
        description = run.target = target.describe()
        observed = target.check_steady_state(max_lag_s=1.0, timeout_s=30.0)
        run.mark(EventKind.STEADY_STATE_OK, ", ".join(f"{k}={v}" for k, v in observed.items()))
        target.prepare_canary(run.run_id)
        with FaultProxy(("127.0.0.1", staging.primary.port), name="probe") as proxy:

            def one(kind: Kind, duration: float, index: int) -> OutageTrial:
                if kind is Kind.FREEZE_POSTGRES:
                    return pg_freeze_trial(run, staging, duration, index, s)
                mode = CutMode.BLACKHOLE if kind is Kind.CUT_BLACKHOLE else CutMode.RESET
                return pg_cut_trial(run, staging, proxy, mode, duration, index, s)

            run_trials(run, result, _trial_plan(s, kinds), one, progress)
    if "postgres" in s.loss_stores:
        for n in s.loss_writes:
            case = pg_known_loss(run, n, s)
            result.losses.append(case)
            progress(_describe_loss(case))
    return description


def calibrate_redis(run: DrillRun, result: CalibrationResult, progress: Progress) -> None:
    s = result.settings
    with redis_lab() as staging:
        if Kind.FREEZE_REDIS in s.kinds:
            LocalRedisTarget(staging).check_steady_state(max_lag_s=1.0, timeout_s=30.0)

            def one(kind: Kind, duration: float, index: int) -> OutageTrial:
                return redis_freeze_trial(run, staging, duration, index, s)

            run_trials(run, result, _trial_plan(s, [Kind.FREEZE_REDIS]), one, progress)
        if "redis" in s.loss_stores:
            for n in s.loss_writes:
                case = redis_known_loss(run, staging, n, s)
                result.losses.append(case)
                progress(_describe_loss(case))


def new_run(ctx: RunContext, settings: CalibrationSettings, scenario: str, kinds: Sequence[Kind]) -> DrillRun:
    objectives = CalibrationObjectives(
        kinds=tuple(kinds),
        error_p95_s=settings.target_p95_s,
        loss_cases=bool(settings.loss_writes and settings.loss_stores),
    )
    return DrillRun(
        drill="calibration", scenario=scenario, ctx=ctx, objectives=objectives, probe_config=settings.probe
    )


def record(run: DrillRun, result: CalibrationResult) -> EvidenceRecord:
    """Checks per trial and per loss case, error statistics in measurements.extra, verdicts per kind."""
    s = result.settings
    for t in result.trials:
        passed = t.error_s is not None and abs(t.error_s) <= s.trial_bound_s
        run.check(
            f"{t.label}",
            passed,
            _describe_trial(t).split(": ", 1)[1] + f" (bound {s.trial_bound_s * 1000:g} ms)",
        )
    for c in result.losses:
        run.check(c.label, c.exact, _describe_loss(c).split(": ", 1)[1] + f"; {c.mechanism}")
    extra: dict[str, float | int | str | bool | None] = {
        "rate_hz": s.rate_hz,
        "op_timeout_s": s.op_timeout_s,
        "durations_ms": ",".join(f"{d * 1000:g}" for d in s.durations_s),
        "trials": len(result.trials),
        "error_definition": "measured RTO (first recovered ack - fault issued) - true outage",
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count() or 0,
    }
    values: dict[str, float | None] = {}
    for kind in result.kinds():
        st = result.stats(kind)
        key = kind.value
        extra[f"{key}.trials"] = sum(1 for t in result.trials if t.kind is kind)
        extra[f"{key}.unrecovered"] = result.unrecovered(kind)
        extra[f"{key}.recovered_on_new_connection"] = sum(
            1 for t in result.trials if t.kind is kind and t.reconnected
        )
        if st is not None:
            for name, value in (
                ("error_p50_ms", st.p50_s),
                ("error_p95_ms", st.p95_s),
                ("error_max_ms", st.max_s),
                ("error_min_ms", st.min_s),
                ("abs_error_p50_ms", st.abs_p50_s),
                ("abs_error_p95_ms", st.abs_p95_s),
                ("abs_error_max_ms", st.abs_max_s),
            ):
                extra[f"{key}.{name}"] = round(value * 1000, 3)
        values[objective_name(kind)] = (
            st.abs_p95_s if st is not None and not result.unrecovered(kind) else None
        )
    overall = result.stats()
    if overall is not None:
        extra["all.abs_error_p50_ms"] = round(overall.abs_p50_s * 1000, 3)
        extra["all.abs_error_p95_ms"] = round(overall.abs_p95_s * 1000, 3)
        extra["all.abs_error_max_ms"] = round(overall.abs_max_s * 1000, 3)
    for c in result.losses:
        extra[f"loss.{c.store}.n{c.writes}.expected"] = len(c.expected)
        extra[f"loss.{c.store}.n{c.writes}.reported"] = len(c.reported)
        extra[f"loss.{c.store}.n{c.writes}.reported_seqs"] = _span(c.reported)
        extra[f"loss.{c.store}.n{c.writes}.seqs_match"] = c.exact
    if result.losses:
        values["lost_writes_mismatch"] = float(sum(c.mismatch for c in result.losses))
    for i, note in enumerate(result.notes, 1):
        extra[f"note.{i}"] = note
    # The headline loss figures only when there is a single case: summed over several cases they
    # would read as one drill losing writes. Every case is in the checks and in extra.
    single = result.losses[0] if len(result.losses) == 1 else None
    measurements = Measurements(
        lost_writes=len(single.reported) if single else None,
        lost_seqs=list(single.reported) if single else [],
        acknowledged_writes=single.acknowledged if single else None,
        extra=extra,
    )
    kinds = [k.value for k in result.kinds()]
    losses = [f"known loss on {store}" for store in dict.fromkeys(c.store for c in result.losses)]
    run.fault = run.fault or ", ".join(kinds + losses) or None
    return run.finish(measurements, values)


@dataclass(frozen=True, slots=True)
class CalibrationRun:
    result: CalibrationResult
    record: EvidenceRecord
    evidence_path: Path | None


def run_calibration(
    settings: CalibrationSettings, ctx: RunContext, progress: Progress = log.info
) -> CalibrationRun:
    """Every case the settings ask for, PostgreSQL first, then Redis where it can run. Evidence is
    written whatever happens; a Ctrl-C is recorded as aborted and re-raised."""
    result = CalibrationResult(settings)
    why_not_redis = redis_available()
    wants_redis = Kind.FREEZE_REDIS in settings.kinds or "redis" in settings.loss_stores
    if wants_redis and why_not_redis:
        result.notes.append(f"Redis skipped: {why_not_redis}")
        settings = _without_redis(settings)
        result.settings = settings
    kinds = [k for k in settings.kinds]
    scenario = (
        f"calibration at {settings.rate_hz:g} Hz: {', '.join(k.value for k in kinds)} x "
        f"{', '.join(f'{d * 1000:g} ms' for d in settings.durations_s)} x {settings.trials}; known loss "
        f"N={','.join(map(str, settings.loss_writes))} on {', '.join(settings.loss_stores) or 'none'}"
    )
    run = new_run(ctx, settings, scenario, kinds)
    try:
        calibrate_postgres(run, result, progress)
        if Kind.FREEZE_REDIS in settings.kinds or "redis" in settings.loss_stores:
            calibrate_redis(run, result, progress)
    except (HarnessError, psycopg.Error) as exc:
        run.record_failure(exc)
    except KeyboardInterrupt as exc:
        run.record_failure(exc)
        record(run, result)
        raise
    evidence = record(run, result)
    return CalibrationRun(result, evidence, run.evidence_path)


def _without_redis(s: CalibrationSettings) -> CalibrationSettings:
    return replace(
        s,
        kinds=tuple(k for k in s.kinds if k is not Kind.FREEZE_REDIS),
        loss_stores=tuple(x for x in s.loss_stores if x != "redis"),
    )
