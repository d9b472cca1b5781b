"""The cache persistence drill: acknowledged writes, a crash of the master, a restart in place, and a
count of the acknowledged writes that survived it (Redis AOF).

Order: steady state (AOF on, as configured) -> canary writes until N are acknowledged -> SIGKILL of
the master while the writes go on -> restart in place (it loads its AOF) -> first acknowledged write
on the restarted node (deadline) -> read back from it -> measure. A process crash keeps the kernel's
page cache, so this shows what the server had written to its AOF, not what it had fsynced: under
`everysec` a host crash or power loss can lose more than this drill sees, and the evidence says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from firedrill.catalogue import BUILTIN_FEATURES, DrillSpec, LocalPlan
from firedrill.drills.base import DrillRun, loss_measurements, round6
from firedrill.errors import ConfigError, DeadlineExceeded, HarnessError, TargetError
from firedrill.evidence import EvidenceRecord, Measurements, Phase
from firedrill.measure import LossResult, measure_loss
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.targets.base import TargetDescription
from firedrill.timeline import Event, EventKind, Op, Sample

# The cache-failover drill: Sentinel (or ElastiCache) failovers run the failover drill on Redis; the
# AOF scenarios run the persistence drill of this module. One feature, one catalogue entry.
SPEC = DrillSpec(
    name="cache-failover",
    summary="Redis master lost or switched over under Sentinel (ElastiCache on AWS); AOF through a crash",
    feature=BUILTIN_FEATURES / "cache_failover.feature",
    category="failover",
    stores=("redis",),
    steps=("firedrill.steps.cache", "firedrill.steps.load"),
    local_plan=LocalPlan(
        starts="a Redis master, 2 replicas and 3 Sentinels",
        faults="kill / fail over / stall the master",
    ),
    aws_plan="firedrill.targets.aws_elasticache:plan_target",
)

# What each fsync policy promises for acknowledged writes (redis.io, "Redis persistence"): `always`
# loses none; `everysec` about one second, two when a slow fsync makes Redis delay the write.
POLICY_MAX_LOSS_S: dict[str, float] = {"always": 0.0, "everysec": 2.0}

SURVIVOR_CHECK = "acknowledged writes survived the restart"


class PersistenceTarget(Protocol):
    """What the drill needs from a cache whose master can be crashed and restarted in place."""

    def describe(self) -> TargetDescription: ...

    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]: ...

    def persistence_settings(self) -> dict[str, str]:
        """`appendonly` and `appendfsync` as the master runs them."""
        ...

    def prepare_canary(self, run_id: str) -> None: ...

    def session_factory(self, run_id: str, probe: ProbeConfig) -> SessionFactory: ...

    def master_address(self) -> str: ...

    def crash_master(self) -> str: ...

    def restart_master(self) -> str:
        """Start the crashed master again on its own data; it must be the master again."""
        ...

    def read_back(self, run_id: str) -> frozenset[int]: ...


@dataclass(frozen=True, slots=True)
class PersistenceSettings:
    max_lag_s: float = 1.0
    steady_timeout_s: float = 30.0
    writes_timeout_s: float = 60.0  # to reach the N acknowledged writes before the crash
    recovery_timeout_s: float = 30.0  # restart to the first acknowledged write on the node
    settle_s: float = 0.3


class CachePersistenceDrill:
    def __init__(
        self,
        target: PersistenceTarget,
        run: DrillRun,
        appendfsync: str,
        settings: PersistenceSettings | None = None,
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ConfigError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
        self.target = target
        self.run = run
        self.appendfsync = appendfsync
        self.settings = settings or PersistenceSettings()
        self._started = False
        self._node: str | None = None
        self._present: frozenset[int] | None = None
        self._restart_s: float | None = None

    # ---- steps ------------------------------------------------------------------------------------
    def establish_steady_state(self) -> None:
        if self._started:
            return
        self._started = True
        s = self.settings
        self.run.check_steady_state(self.target, max_lag_s=s.max_lag_s, timeout_s=s.steady_timeout_s)
        live = self.target.persistence_settings()
        wanted = {"appendonly": "yes", "appendfsync": self.appendfsync}
        shown = ", ".join(f"{k} {v}" for k, v in live.items())
        if not self.run.check("AOF persistence as configured", live == wanted, f"the master runs {shown}"):
            raise TargetError(
                f"the master runs {shown}, the drill needs appendonly yes, appendfsync {self.appendfsync}"
            )
        self.target.prepare_canary(self.run.run_id)
        self.run.start_probe("writer", self.target.session_factory(self.run.run_id, self.run.probe_config))
        self.run.mark(EventKind.PROBES_STARTED, f"{self.run.probe_config.rate_hz:g} Hz")

    def crash_and_restart(self, after_writes: int) -> None:
        """SIGKILL the master once `after_writes` writes are acknowledged (writes go on), restart it
        in place, wait for it to acknowledge a write, read back what it holds."""
        if after_writes < 1:
            raise ConfigError(
                f"the drill needs at least 1 acknowledged write before the crash, not {after_writes}"
            )
        self.establish_steady_state()
        self._wait_for_acks(after_writes)
        self._node = self.target.master_address()
        self.run.fault = "kill"
        self.run.mark(EventKind.FAULT_ISSUED, "kill")
        self.run.mark(EventKind.FAULT_RETURNED, self.target.crash_master())
        start = time.monotonic()
        detail = self.target.restart_master()
        self._restart_s = time.monotonic() - start
        self.run.mark(EventKind.FAULT_CLEARED, detail)
        self._await_recovery(self._node)
        time.sleep(self.settings.settle_s)
        self.run.stop_probes()
        self._present = self.target.read_back(self.run.run_id)
        self.run.mark(EventKind.VERIFIED, f"{len(self._present)} canary records on the restarted master")

    def _wait_for_acks(self, wanted: int) -> None:
        limit = self.settings.writes_timeout_s
        deadline = time.monotonic() + limit
        while sum(1 for smp in self.run.timeline.snapshot()[0] if smp.ok) < wanted:
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"fewer than {wanted} canary writes acknowledged within {limit:g} s")
            time.sleep(0.01)

    def _await_recovery(self, node: str) -> None:
        limit = self.settings.recovery_timeout_s
        deadline = time.monotonic() + limit
        while True:
            samples, events = self.run.timeline.snapshot()
            outage = restart_outage(samples, events, node)
            if outage is not None and outage.recovered_node:
                self.run.mark(EventKind.RECOVERED, f"first acknowledged write on {node} after the restart")
                return
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"no acknowledged write on the restarted master within {limit:g} s")
            time.sleep(0.02)

    # ---- the end -----------------------------------------------------------------------------------
    def conclude(self) -> EvidenceRecord:
        """Measure and write evidence. No I/O on the target: it may be gone already."""
        if self.run.evidence is not None:
            return self.run.evidence
        self.run.stop_probes()
        samples, events = self.run.timeline.snapshot()
        fault = next((e for e in events if e.kind is EventKind.FAULT_RETURNED), None)
        if fault is None or self._node is None:
            if self.run.error is None:
                self.run.record_failure(HarnessError("the master was never crashed: nothing to measure"))
            return self.run.finish(Measurements(), {"rto": None, "rpo": None, "lost_writes": None})
        outage = restart_outage(samples, events, self._node)
        assert outage is not None  # FAULT_ISSUED and FAULT_RETURNED are marked together
        before = [smp for smp in samples if smp.end < fault.mono]
        loss = measure_loss(before, self._present) if self._present is not None else None
        if loss is not None:
            self._survivor_check(loss)
        elif self.run.error is None:
            self.run.record_failure(HarnessError("the restarted master was never read back"))
        return self.run.finish(*self._measurements(outage, loss, samples))

    def _survivor_check(self, loss: LossResult) -> None:
        bound = POLICY_MAX_LOSS_S.get(self.appendfsync)
        if bound is None:
            passed, promise = True, "no bound is promised"
        elif bound == 0:
            passed, promise = loss.lost == 0, "every one must survive"
        else:
            passed, promise = loss.window_s <= bound, f"Redis promises a loss of at most {bound:g} s"
        lost = ", ".join(map(str, loss.lost_seqs[:20])) + (" ..." if loss.lost > 20 else "")
        self.run.check(
            SURVIVOR_CHECK,
            passed,
            f"{loss.surviving}/{loss.acknowledged} acknowledged before the SIGKILL are on the restarted "
            f"master (appendfsync {self.appendfsync}: {promise})"
            + (f"; lost seq {lost}, a {loss.window_s:.3f} s window" if loss.lost else "")
            + "; a process crash keeps the page cache, a host crash may lose more",
        )

    def _measurements(
        self, outage: RestartOutage, loss: LossResult | None, samples: list[Sample]
    ) -> tuple[Measurements, dict[str, float | None]]:
        m = Measurements(
            rto_s=round6(outage.rto_s),
            recovered=outage.recovered_node is not None,
            outage_seen=outage.outage_s is None or outage.outage_s > 0,
            outage_s=round6(outage.outage_s),
            failed_writes=outage.failed_writes,
            **loss_measurements(loss),
            recovered_node=outage.recovered_node,
            phases=list(outage.phases),
            extra={
                "appendfsync": self.appendfsync,
                "aof_acknowledged_before_crash": loss.acknowledged if loss else None,
                "aof_survivors": loss.surviving if loss else None,
                "aof_lost": loss.lost if loss else None,
                "restart_s": round6(self._restart_s),
                "max_gap_s": round6(outage.outage_s),
                "crash": "SIGKILL of the server process (page cache kept)",
                "writes_after_restart": sum(1 for s in samples if s.ok) - (loss.acknowledged if loss else 0),
            },
        )
        values = {
            "rto": outage.rto_s,
            "rpo": loss.window_s if loss else None,
            "lost_writes": float(loss.lost) if loss else None,
        }
        return m, values


@dataclass(frozen=True, slots=True)
class RestartOutage:
    """The client's view of a crash and an in-place restart. Times are seconds from the fault."""

    rto_s: float | None  # kill issued -> first ack by the restarted process
    outage_s: float | None  # last ack before the kill -> that first ack: the silence clients saw
    failed_writes: int
    recovered_node: str | None
    phases: tuple[Phase, ...]  # kill, restart (process start and AOF load), reconnect


def restart_outage(samples: list[Sample], events: list[Event], node: str) -> RestartOutage | None:
    """Pure: the outage around FAULT_ISSUED (kill issued), FAULT_RETURNED (the killed process is
    reaped) and FAULT_CLEARED (restarted). None before the fault.

    The kill's return splits the acknowledgements exactly: before it only the old process can have
    answered, after it only the new one. That holds with client retries too, which can hide a
    restart of a few tens of ms entirely (no failed write, no gap over firedrill.measure's 0.25 s
    threshold), so the generic gap heuristic would take an ack of the dying process for recovery.
    """
    issued = next((e.mono for e in events if e.kind is EventKind.FAULT_ISSUED), None)
    returned = next((e.mono for e in events if e.kind is EventKind.FAULT_RETURNED), None)
    if issued is None or returned is None:
        return None
    cleared = next((e.mono for e in events if e.kind is EventKind.FAULT_CLEARED), None)
    writes = sorted((s for s in samples if s.op is Op.WRITE), key=lambda s: s.end)
    first = next((s for s in writes if s.ok and s.end > returned and s.node == node), None)
    last_before = max((s.end for s in writes if s.ok and s.end < returned), default=issued)
    phases = [Phase(name="kill", start_s=0.0, end_s=returned - issued, duration_s=returned - issued)]
    if cleared is not None:
        phases.append(
            Phase(
                name="restart",
                start_s=returned - issued,
                end_s=cleared - issued,
                duration_s=cleared - returned,
            )
        )
        if first is not None and first.end >= cleared:
            phases.append(
                Phase(
                    name="reconnect",
                    start_s=cleared - issued,
                    end_s=first.end - issued,
                    duration_s=first.end - cleared,
                )
            )
    return RestartOutage(
        rto_s=None if first is None else first.end - issued,
        outage_s=None if first is None else first.end - last_before,
        failed_writes=sum(1 for s in writes if not s.ok and s.end >= issued),
        recovered_node=None if first is None else first.node,
        phases=tuple(phases),
    )


def survivors(record: EvidenceRecord) -> str | None:
    """'S/N' from the evidence of a persistence run, None when it was not counted."""
    n = record.measurements.extra.get("aof_acknowledged_before_crash")
    s = record.measurements.extra.get("aof_survivors")
    has_check = any(c.name == SURVIVOR_CHECK for c in record.checks)
    return f"{s}/{n}" if has_check and isinstance(n, int) and isinstance(s, int) else None
