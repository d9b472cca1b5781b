"""The calibration's cases: faults of known size injected into a local staging, measured by the probes.

Each case records the truth of its fault independently of the probes, on the same monotonic clock:

* freeze: SIGSTOP to the server process and all its children, a timed sleep, SIGCONT. The pids are
  listed *before* the fault is marked, so the mark and the first signal are microseconds apart.
  True outage = after the last SIGCONT - after the last SIGSTOP.
* proxy cut: the probe reaches the server through `firedrill.faults.FaultProxy`; its cut window as the
  proxy's event loop applied it (`began_at`, `ended_at`) is the truth. `blackhole` hangs the probe's
  calls like a freeze; `reset` makes them fail at once, so the probe only notices the end of the
  window on its next attempt: that mode's error includes up to one probe period by construction.
* measured RTO = first recovered acknowledgement - FAULT_ISSUED (exactly what a drill reports);
  error = measured - true (its statistics are computed in `firedrill.drills.calibration`).
* known loss: replication to the standby is cut (PostgreSQL: the standby streams WAL through a
  FaultProxy, which is blackholed; Redis: the master refuses PSYNC/SYNC through an ACL and its
  replica links are killed), exactly N writes are acknowledged by the primary alone, the primary is
  killed and the standby promoted; `measure_loss` must report exactly those N sequence numbers.

A trial's raw samples and events are merged into the run's evidence, so its figures can be recomputed.
Every staging and proxy is torn down by `with` blocks, also on failure and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
from psycopg import sql

from firedrill.drills.base import DrillRun
from firedrill.errors import ConfigError, DeadlineExceeded, StagingError, TargetError
from firedrill.faults.proxy import CutMode, FaultProxy
from firedrill.measure import measure_loss, measure_outage
from firedrill.probes import CanaryWriter, ProbeConfig, ProbeSession, SessionFactory
from firedrill.staging.common import children_of, pid_alive, wait_until
from firedrill.staging.postgres import DATABASE, SUPERUSER, PgStaging, PgStagingConfig
from firedrill.staging.redis_sentinel import RedisSentinelStaging, RedisStagingConfig
from firedrill.targets import pg_canary, redis_canary
from firedrill.targets.base import FaultKind, FaultSpec
from firedrill.targets.local_postgres import LocalPostgresTarget
from firedrill.targets.local_redis import LocalRedisTarget, address
from firedrill.targets.pg_canary import PgCanarySession, PgEndpoint
from firedrill.targets.redis_canary import RedisCanarySession
from firedrill.timeline import EventKind, Op, Sample, Timeline


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


# ---- Redis (only where redis-server is installed) ------------------------------------------------------
def redis_available() -> str | None:
    """None when Redis calibration can run here, else why not."""
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
        return set().union(*(redis_canary.read_back(staging.client(r), canary) for r in replicas))

    def replicas_hold(seqs: set[int]) -> bool:
        try:  # a replica busy for a moment (0.5 s control timeout) is asked again
            return all(seqs <= redis_canary.read_back(staging.client(r), canary) for r in replicas)
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
