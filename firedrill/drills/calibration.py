"""Calibration: outages and losses whose true size is known, measured by the drills' own machinery.

The figures a drill reports come from `CanaryWriter` samples and the pure `measure_outage` /
`measure_loss`. Here the same probes and the same functions face faults whose truth is recorded
independently, on the same monotonic clock:

* freeze: SIGSTOP to the server process and all its children, a timed sleep, SIGCONT. The pids are
  listed *before* the fault is marked, so the mark and the first signal are microseconds apart.
  True outage = after the last SIGCONT - after the last SIGSTOP.
* proxy cut: the probe reaches the server through `firedrill.faults.FaultProxy`; its cut window as the
  proxy's event loop applied it (`began_at`, `ended_at`) is the truth. `blackhole` hangs the probe's
  calls like a freeze; `reset` makes them fail at once, so the probe only notices the end of the
  window on its next attempt: that mode's error includes up to one probe period by construction.
* measured RTO = first recovered acknowledgement - FAULT_ISSUED (exactly what a drill reports);
  error = measured - true, reported signed and absolute, p50/p95/max per kind.
* known loss: replication to the standby is cut (PostgreSQL: the standby streams WAL through a
  FaultProxy, which is blackholed; Redis: the master refuses PSYNC/SYNC through an ACL and its
  replica links are killed), exactly N writes are acknowledged by the primary alone, the primary is
  killed and the standby promoted; `measure_loss` must report exactly those N sequence numbers.

The result is written as one evidence record through `firedrill.drills.base.DrillRun`, like every drill (a
deliberate exception to "firedrill does not import drills": a calibration is a drill of the firedrill
itself and its evidence must look like any other). Every staging and proxy is torn down by `with`
blocks, also on failure and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from firedrill.catalogue import BUILTIN_FEATURES, DrillSpec, LocalPlan
from firedrill.drills.base import DrillRun, Objectives
from firedrill.errors import ConfigError, DeadlineExceeded, HarnessError, StagingError, TargetError
from firedrill.evidence import EvidenceRecord, Measurements, Objective
from firedrill.faults.proxy import CutMode, FaultProxy
from firedrill.measure import measure_loss, measure_outage
from firedrill.probes import CanaryWriter, ProbeConfig, ProbeSession, SessionFactory
from firedrill.run_context import RunContext
from firedrill.staging.common import children_of, pid_alive, wait_until
from firedrill.staging.postgres import DATABASE, SUPERUSER, PgStaging, PgStagingConfig
from firedrill.staging.redis_sentinel import RedisSentinelStaging, RedisStagingConfig
from firedrill.targets import pg_canary
from firedrill.targets.base import FaultKind, FaultSpec, TargetDescription
from firedrill.targets.local_postgres import LocalPostgresTarget
from firedrill.targets.pg_canary import PgCanarySession, PgEndpoint
from firedrill.timeline import EventKind, Op, Sample, Timeline

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


class Kind(StrEnum):
    FREEZE_POSTGRES = "freeze-postgres"
    CUT_BLACKHOLE = "cut-blackhole"
    CUT_RESET = "cut-reset"
    FREEZE_REDIS = "freeze-redis"


KIND_LABELS = {
    Kind.FREEZE_POSTGRES: "SIGSTOP/SIGCONT of the PostgreSQL primary",
    Kind.CUT_BLACKHOLE: "proxy cut (blackhole) between probe and PostgreSQL",
    Kind.CUT_RESET: "proxy cut (reset) between probe and PostgreSQL",
    Kind.FREEZE_REDIS: "SIGSTOP/SIGCONT of the Redis master",
}

# Sentinel must not fail over during a Redis freeze: its down-after is kept far above the longest
# freeze (a known loss promotes explicitly with SENTINEL FAILOVER instead).
REDIS_DOWN_AFTER_MS = 30000


@dataclass(frozen=True, slots=True)
class CalibrationSettings:
    durations_s: tuple[float, ...] = (0.2, 1.0, 3.0)
    trials: int = 3  # per kind and duration
    rate_hz: float = 100.0
    op_timeout_s: float = 0.5
    kinds: tuple[Kind, ...] = tuple(Kind)
    loss_writes: tuple[int, ...] = (1, 5, 20)
    loss_stores: tuple[str, ...] = ("postgres", "redis")
    baseline_writes: int = 10  # replicated before the link is cut, so they must survive
    target_p95_s: float = 0.010  # the issue's target for |error| p95 at 100 Hz
    trial_bound_s: float = 0.050  # a single trial beyond this is a failed check (gross miss)
    baseline_s: float = 0.3
    settle_s: float = 0.2
    recovery_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"trials must be at least 1, not {self.trials}")
        if not self.durations_s or any(not 0.01 <= d <= 60 for d in self.durations_s):
            raise ConfigError(f"durations must be within 10 ms..60 s, not {self.durations_s}")
        if any(n < 1 or n > 10000 for n in self.loss_writes):
            raise ConfigError(f"known-loss sizes must be within 1..10000, not {self.loss_writes}")
        self.probe  # noqa: B018  (ProbeConfig refuses a bad rate or deadline, naming it)

    @property
    def probe(self) -> ProbeConfig:
        return ProbeConfig(rate_hz=self.rate_hz, op_timeout_s=self.op_timeout_s)


QUICK = CalibrationSettings(durations_s=(0.2, 0.5), trials=2, loss_writes=(5,))


@dataclass(frozen=True, slots=True)
class OutageTrial:
    kind: Kind
    planned_s: float
    index: int
    true_s: float
    measured_s: float | None  # None: no recovery seen before the deadline
    outage_seen: bool
    failed_writes: int
    achieved_hz: float
    reconnected: bool = False  # the recovering write ran on a new connection (after a failed one)
    note: str = ""

    @property
    def error_s(self) -> float | None:
        return None if self.measured_s is None else self.measured_s - self.true_s

    @property
    def label(self) -> str:
        return f"{self.kind.value} {self.planned_s * 1000:g} ms #{self.index}"


@dataclass(frozen=True, slots=True)
class LossCase:
    store: str
    writes: int
    expected: tuple[int, ...]
    reported: tuple[int, ...]
    acknowledged: int
    mechanism: str
    note: str = ""

    @property
    def exact(self) -> bool:
        return self.expected == self.reported

    @property
    def mismatch(self) -> int:
        return len(set(self.expected) ^ set(self.reported))

    @property
    def label(self) -> str:
        return f"known loss {self.store} N={self.writes}"


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


# ---- ground truth -------------------------------------------------------------------------------------
def _process_tree(pid: int) -> list[int]:
    return [pid, *children_of(pid)]


def _sleep_until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(left)


def timed_freeze(
    pids: Sequence[int], timeline: Timeline, duration_s: float, what: str
) -> tuple[float, float]:
    """SIGSTOP `pids`, sleep, SIGCONT; returns (after last SIGSTOP, after last SIGCONT), monotonic.

    The pids are resolved by the caller beforehand so FAULT_ISSUED and the first signal are
    microseconds apart. SIGCONT is sent in a finally: a Ctrl-C never leaves a server stopped."""
    stopped: list[int] = []
    timeline.mark(EventKind.FAULT_ISSUED, f"SIGSTOP to {what} for {duration_s * 1000:g} ms")
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        t_stop = time.monotonic()
        timeline.mark(EventKind.FAULT_RETURNED, f"{len(stopped)} process(es) stopped")
        _sleep_until(t_stop + duration_s)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        t_cont = time.monotonic()
    timeline.mark(EventKind.FAULT_CLEARED, f"SIGCONT after {(t_cont - t_stop) * 1000:.1f} ms")
    return t_stop, t_cont


def timed_cut(proxy: FaultProxy, timeline: Timeline, duration_s: float, mode: CutMode) -> tuple[float, float]:
    """A proxy cut; returns the window as the proxy's loop applied it."""
    timeline.mark(EventKind.FAULT_ISSUED, f"proxy {mode.value} cut for {duration_s * 1000:g} ms")
    window = proxy.cut(duration_s, mode)
    timeline.mark(EventKind.FAULT_RETURNED, f"cut in effect on {proxy.address}")
    done = proxy.wait_cut(duration_s + 10.0)
    timeline.mark(EventKind.FAULT_CLEARED, done.describe())
    assert done.ended_at is not None and done.began_at == window.began_at
    return done.began_at, done.ended_at


# ---- one outage trial ---------------------------------------------------------------------------------
def _merge(run: DrillRun, timeline: Timeline) -> None:
    """Keep a trial's raw samples and events in the run's evidence, so its figures can be recomputed."""
    samples, events = timeline.snapshot()
    for s in samples:
        run.timeline.add_sample(s)
    run.timeline.events.extend(events)
    run.timeline.events.sort(key=lambda e: e.mono)


def outage_trial(
    run: DrillRun,
    kind: Kind,
    planned_s: float,
    index: int,
    factory: SessionFactory,
    recovered: frozenset[str],
    inject: Callable[[Timeline], tuple[float, float]],
    settings: CalibrationSettings,
) -> OutageTrial:
    """Probe at the calibration rate, inject, wait for the first recovered ack, compare with truth."""
    timeline = Timeline()
    probe = f"{kind.value}-{planned_s * 1000:g}ms-{index}"
    timeline.mark(EventKind.NOTE, f"trial {probe} begins")
    writer = CanaryWriter(probe, factory, timeline, settings.probe)
    writer.start()
    note = ""
    try:
        # A random phase against the probe's period, as a real fault has: a baseline that is a whole
        # number of periods would inject every fault at the same point of the probe's cycle.
        time.sleep(settings.baseline_s + random.uniform(0, 1 / settings.rate_hz))
        if not any(s.ok for s in timeline.snapshot()[0]):
            raise TargetError(f"{probe}: canary writes fail before the fault")
        began, ended = inject(timeline)
        try:
            wait_until(
                f"{probe}: first recovered write",
                lambda: measure_outage(*timeline.snapshot(), recovered_nodes=recovered).recovered,
                timeout_s=settings.recovery_timeout_s,
                interval_s=0.02,
            )
            time.sleep(settings.settle_s)
        except DeadlineExceeded as exc:
            note = str(exc)
    finally:
        writer.stop()
        timeline.mark(EventKind.PROBES_STOPPED, f"trial {probe} ends")
        _merge(run, timeline)
    samples, events = timeline.snapshot()
    outage = measure_outage(samples, events, recovered_nodes=recovered)
    span = max(s.end for s in samples) - min(s.start for s in samples)
    rec_start = next(
        (s.start for s in samples if s.ok and s.end == outage.first_recovered_at), outage.fault_at
    )
    reconnected = any(not s.ok and outage.fault_at <= s.end <= rec_start for s in samples)
    return OutageTrial(
        kind=kind,
        planned_s=planned_s,
        index=index,
        true_s=ended - began,
        measured_s=outage.rto_s,
        outage_seen=outage.outage_seen,
        failed_writes=outage.failed_writes,
        achieved_hz=len(samples) / span if span > 0 else 0.0,
        reconnected=reconnected,
        note=note,
    )


# ---- PostgreSQL ---------------------------------------------------------------------------------------
def pg_freeze_trial(
    run: DrillRun, staging: PgStaging, planned_s: float, index: int, settings: CalibrationSettings
) -> OutageTrial:
    primary = staging.primary
    target = LocalPostgresTarget(staging)
    canary = f"{run.run_id}-fp{index}-{planned_s * 1000:g}"
    target.prepare_canary(canary)
    pid = primary.postmaster_pid()
    if pid is None or not pid_alive(pid):
        raise StagingError(f"{primary.name} is not running")

    def inject(tl: Timeline) -> tuple[float, float]:
        return timed_freeze(_process_tree(pid), tl, planned_s, f"{primary.name} (postmaster + children)")

    return outage_trial(
        run,
        Kind.FREEZE_POSTGRES,
        planned_s,
        index,
        target.session_factory(canary, settings.probe),
        frozenset({primary.address}),
        inject,
        settings,
    )


def pg_cut_trial(
    run: DrillRun,
    staging: PgStaging,
    proxy: FaultProxy,
    mode: CutMode,
    planned_s: float,
    index: int,
    settings: CalibrationSettings,
) -> OutageTrial:
    """The probe connects to the primary only through `proxy` (a single host: no failing over)."""
    endpoint = PgEndpoint(hosts=(("127.0.0.1", proxy.port),), dbname=DATABASE, user=SUPERUSER)
    canary = f"{run.run_id}-c{mode.value[0]}{index}-{planned_s * 1000:g}"
    LocalPostgresTarget(staging).prepare_canary(canary)
    probe = settings.probe
    kind = Kind.CUT_BLACKHOLE if mode is CutMode.BLACKHOLE else Kind.CUT_RESET
    return outage_trial(
        run,
        kind,
        planned_s,
        index,
        lambda: PgCanarySession(endpoint, canary, probe),
        frozenset({staging.primary.address}),
        lambda tl: timed_cut(proxy, tl, planned_s, mode),
        settings,
    )


def _sample(probe: str, seq: int, session: ProbeSession) -> Sample:
    wall, start = time.time(), time.monotonic()
    try:
        node = session.write(seq)
        ok, error = True, None
    except TargetError as exc:
        node, ok, error = None, False, getattr(exc, "probe_error", type(exc).__name__)
    return Sample(probe, seq, Op.WRITE, start, time.monotonic(), wall, ok, error, node)


def _write_all(timeline: Timeline, probe: str, session: ProbeSession, seqs: range, what: str) -> list[Sample]:
    samples = [_sample(probe, seq, session) for seq in seqs]
    for s in samples:
        timeline.add_sample(s)
    failed = [s.seq for s in samples if not s.ok]
    if failed:
        raise TargetError(f"{what}: writes {failed[:5]} were not acknowledged")
    return samples


def route_standby_through(staging: PgStaging, proxy: FaultProxy, timeout_s: float = 20.0) -> None:
    """Point the standby's walreceiver at the proxy (primary_conninfo is reloadable since PG 13)."""
    standby = staging.standby
    with staging.connect(standby) as conn:
        row = conn.execute("SHOW primary_conninfo").fetchone()
        current = str(row[0]) if row else ""
        if not re.search(r"\bport=\d+", current):
            raise StagingError(f"cannot re-route {standby.name}: primary_conninfo has no port: {current!r}")
        routed = re.sub(r"\bport=\d+", f"port={proxy.port}", current)
        conn.execute(sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(routed)))
        conn.execute("SELECT pg_reload_conf()")

        def streaming_via_proxy() -> bool:
            got = conn.execute("SELECT status, sender_port FROM pg_stat_wal_receiver").fetchone()
            return got is not None and got[0] == "streaming" and got[1] == proxy.port

        wait_until(
            f"{standby.name} streaming through {proxy.address}", streaming_via_proxy, timeout_s=timeout_s
        )


def pg_known_loss(run: DrillRun, writes: int, settings: CalibrationSettings) -> LossCase:
    """Asynchronous staging whose standby streams through a proxy; blackhole it, acknowledge
    exactly `writes` writes on the primary, kill it, drop the held WAL, promote, read back."""
    mechanism = (
        "asynchronous streaming replication through a FaultProxy; the proxy is blackholed (held WAL "
        "is dropped when it stops after the kill), primary SIGKILLed, standby promoted with pg_promote()"
    )
    tl = Timeline()
    probe = f"loss-postgres-{writes}"
    canary = f"{run.run_id}-lp{writes}"
    m = settings.baseline_writes
    with PgStaging(PgStagingConfig(sync_replication=False)) as staging:
        with FaultProxy(("127.0.0.1", staging.primary.port), name="replication") as proxy:
            route_standby_through(staging, proxy)
            target = LocalPostgresTarget(staging)
            observed = target.check_steady_state(max_lag_s=1.0, timeout_s=30.0)
            tl.mark(EventKind.STEADY_STATE_OK, ", ".join(f"{k}={v}" for k, v in observed.items()))
            target.prepare_canary(canary)
            session = PgCanarySession(target.endpoint(), canary, settings.probe)
            standby = staging.standby
            try:
                _write_all(tl, probe, session, range(1, m + 1), "baseline")
                with staging.connect(standby) as conn:

                    def replayed() -> bool:
                        # Asynchronous: the standby may not even have replayed CREATE TABLE yet.
                        try:
                            return set(range(1, m + 1)) <= pg_canary.read_back(conn, canary)
                        except TargetError:
                            return False

                    wait_until(
                        f"baseline writes replayed on {standby.name}", replayed, timeout_s=10, interval_s=0.01
                    )
                proxy.begin_cut(CutMode.BLACKHOLE)
                tl.mark(EventKind.NOTE, f"replication link blackholed at {proxy.address}")
                _write_all(tl, probe, session, range(m + 1, m + writes + 1), "writes behind the cut")
            finally:
                session.close()
            with staging.connect(standby) as conn:
                leaked = pg_canary.read_back(conn, canary) - set(range(1, m + 1))
            if leaked:
                raise StagingError(f"the cut leaked: the standby already has seq {sorted(leaked)[:10]}")
            tl.mark(EventKind.FAULT_ISSUED, "kill")
            detail = target.inject(FaultSpec(FaultKind.KILL))
            tl.mark(EventKind.FAULT_RETURNED, detail)
        tl.mark(EventKind.NOTE, "replication proxy stopped: WAL it held is dropped")
        tl.mark(EventKind.PROMOTION_STARTED, "firedrill promotes")
        tl.mark(EventKind.PROMOTION_DONE, target.promote(timeout_s=30))
        present = target.read_back(canary)
    _merge(run, tl)
    loss = measure_loss(tl.snapshot()[0], present)
    return LossCase(
        store="postgres",
        writes=writes,
        expected=tuple(range(m + 1, m + writes + 1)),
        reported=loss.lost_seqs,
        acknowledged=loss.acknowledged,
        mechanism=mechanism,
    )


# ---- Redis (only where the Redis canary pieces exist) -------------------------------------------------
def redis_available() -> str | None:
    """None when Redis calibration can run here, else why not."""
    try:
        import firedrill.targets.local_redis
        import firedrill.targets.redis_canary  # noqa: F401
    except ModuleNotFoundError as exc:
        return f"Redis canary pieces missing ({exc.name})"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    return None


@contextlib.contextmanager
def redis_lab() -> Iterator[RedisSentinelStaging]:
    """A Redis staging whose Sentinels do not fail over during a freeze (down-after 30 s)."""
    with RedisSentinelStaging(RedisStagingConfig(down_after_ms=REDIS_DOWN_AFTER_MS)) as staging:
        yield staging


def redis_freeze_trial(
    run: DrillRun, staging: RedisSentinelStaging, planned_s: float, index: int, settings: CalibrationSettings
) -> OutageTrial:
    from firedrill.targets.local_redis import LocalRedisTarget, address

    target = LocalRedisTarget(staging)
    master = staging.current_master()
    canary = f"{run.run_id}-fr{index}-{planned_s * 1000:g}"
    target.prepare_canary(canary)
    pid = master.pid
    if pid is None:
        raise StagingError(f"{master.name} is not running")

    def inject(tl: Timeline) -> tuple[float, float]:
        return timed_freeze(_process_tree(pid), tl, planned_s, f"{master.name} (redis-server)")

    return outage_trial(
        run,
        Kind.FREEZE_REDIS,
        planned_s,
        index,
        target.session_factory(canary, settings.probe),
        frozenset({address(master)}),
        inject,
        settings,
    )


def redis_known_loss(
    run: DrillRun, staging: RedisSentinelStaging, writes: int, settings: CalibrationSettings
) -> LossCase:
    """Replicas cut off by the master itself (ACL denies PSYNC/SYNC, replica links killed), exactly
    `writes` acknowledged by the master alone, master SIGKILLed, SENTINEL FAILOVER, read back."""
    import redis

    from firedrill.targets.local_redis import LocalRedisTarget
    from firedrill.targets.redis_canary import RedisCanarySession, read_back

    mechanism = (
        "ACL SETUSER default -psync -sync on the master + CLIENT KILL TYPE replica (replicas cannot "
        "resync), master SIGKILLed, SENTINEL FAILOVER promotes a replica"
    )
    target = LocalRedisTarget(staging)
    tl = Timeline()
    probe = f"loss-redis-{writes}"
    canary = f"{run.run_id}-lr{writes}"
    m = settings.baseline_writes
    observed = target.check_steady_state(max_lag_s=1.0, timeout_s=30.0)
    tl.mark(EventKind.STEADY_STATE_OK, ", ".join(f"{k}={v}" for k, v in observed.items()))
    target.prepare_canary(canary)
    master = staging.current_master()
    replicas = [n for n in staging.nodes if n != master]
    control = staging.client(master)

    def on_replicas() -> set[int]:
        return set().union(*(read_back(staging.client(r), canary) for r in replicas))

    def replicas_hold(seqs: set[int]) -> bool:
        try:  # a replica busy for a moment (0.5 s control timeout) is asked again
            return all(seqs <= read_back(staging.client(r), canary) for r in replicas)
        except TargetError:
            return False

    # redis-py leaves execute_command unannotated; the replies are not used.
    execute: Callable[..., Any] = control.execute_command
    session = RedisCanarySession(target.endpoint(), canary, settings.probe)
    try:
        _write_all(tl, probe, session, range(1, m + 1), "baseline")
        wait_until(
            "baseline writes on every replica",
            lambda: replicas_hold(set(range(1, m + 1))),
            timeout_s=10,
            interval_s=0.01,
        )
        try:
            execute("ACL", "SETUSER", "default", "-psync", "-sync")
            execute("CLIENT", "KILL", "TYPE", "replica")
        except redis.RedisError as exc:
            raise TargetError(f"cannot cut replication on {master.name}: {exc}") from exc
        wait_until(
            f"{master.name} without replicas",
            lambda: int(control.info("replication").get("connected_slaves", -1)) == 0,
            timeout_s=5,
        )
        tl.mark(EventKind.NOTE, f"replication cut on {master.name} (ACL + CLIENT KILL TYPE replica)")
        _write_all(tl, probe, session, range(m + 1, m + writes + 1), "writes behind the cut")
    finally:
        session.close()
    leaked = on_replicas() - set(range(1, m + 1))
    if leaked:
        raise StagingError(f"the cut leaked: a replica already has seq {sorted(leaked)[:10]}")
    tl.mark(EventKind.FAULT_ISSUED, "kill")
    tl.mark(EventKind.FAULT_RETURNED, target.inject(FaultSpec(FaultKind.KILL)))
    tl.mark(EventKind.PROMOTION_STARTED, "SENTINEL FAILOVER (down-after is 30 s in calibration)")
    staging.sentinel_failover()
    tl.mark(EventKind.PROMOTION_DONE, target.promote(timeout_s=30))
    present = target.read_back(canary)
    _merge(run, tl)
    tl_restore = target.restore_topology(timeout_s=60)
    run.mark(EventKind.TOPOLOGY_RESTORED, tl_restore)
    loss = measure_loss(tl.snapshot()[0], present)
    return LossCase(
        store="redis",
        writes=writes,
        expected=tuple(range(m + 1, m + writes + 1)),
        reported=loss.lost_seqs,
        acknowledged=loss.acknowledged,
        mechanism=mechanism,
    )


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
            from firedrill.targets.local_redis import LocalRedisTarget

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
    from dataclasses import replace

    return replace(
        s,
        kinds=tuple(k for k in s.kinds if k is not Kind.FREEZE_REDIS),
        loss_stores=tuple(x for x in s.loss_stores if x != "redis"),
    )
