"""The interface every failover target implements, local or cloud, database or cache.

Drills talk only to this interface. Differences between targets show as capabilities (which faults
they can inject, whether promotion is manual), never as `if environment == ...` in a drill.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

from firedrill.aws.guardrails import Identity
from firedrill.evidence import Node
from firedrill.probes import ProbeConfig, SessionFactory

ChangeKind = Literal["aws", "data", "wait", "local", "rest", "command"]


@dataclass(frozen=True, slots=True)
class Change:
    """One thing a drill would do, as `firedrill plan` lists it: an AWS API call that changes
    something, a write through the data plane, a bounded wait, a local action, an HA manager's
    REST call, or a host command a profile names."""

    kind: ChangeKind
    action: str  # e.g. "rds:RebootDBInstance"
    target: str
    detail: str = ""

    def line(self) -> str:
        return f"[{self.kind}] {self.action} {self.target}" + (f": {self.detail}" if self.detail else "")


class Plannable(Protocol):
    """A cloud target opened read-only for `firedrill plan`: its guardrails have run (account, tags),
    and it says what the drill would change, without changing it."""

    identity: Identity  # the caller, as the account guardrail saw it
    label: str
    guardrail: str

    def plan_checks(self) -> list[str]: ...

    def plan(self, *, rate_hz: float) -> list[Change]: ...


class FaultKind(StrEnum):
    KILL = "kill"  # SIGKILL of the primary and its workers
    STOP = "stop"  # graceful shutdown of the primary
    FREEZE = "freeze"  # SIGSTOP for a duration, then SIGCONT
    SWITCHOVER = "switchover"  # planned failover issued through the control plane
    REBOOT_FAILOVER = "reboot-failover"  # AWS RDS reboot with ForceFailover
    TEST_FAILOVER = "test-failover"  # AWS ElastiCache test_failover
    NETWORK_CUT = "network-cut"  # client-to-primary traffic blackholed for a duration (fault proxy)
    DCS_QUORUM_LOSS = "dcs-quorum-loss"  # a majority of the HA manager's DCS (etcd) down for a duration


@dataclass(frozen=True, slots=True)
class FaultSpec:
    kind: FaultKind
    duration_s: float = 0.0  # FREEZE: how long the node stays stopped; NETWORK_CUT: how long the cut lasts


@dataclass(frozen=True, slots=True)
class TargetDescription:
    kind: str  # "postgres", "redis"
    environment_kind: str  # "local-staging", "aws"
    servers: dict[str, str] = field(default_factory=dict)
    nodes: tuple[Node, ...] = ()
    settings: dict[str, str] = field(default_factory=dict)


class FailoverTarget(Protocol):
    """A replicated store whose primary can be lost and replaced."""

    def describe(self) -> TargetDescription: ...

    def supported_faults(self) -> frozenset[FaultKind]: ...

    def promotion_is_manual(self) -> bool:
        """True when the firedrill must promote (local PostgreSQL); False when the platform does
        (Sentinel, RDS Multi-AZ) and `promote` only waits for it."""
        ...

    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]: ...

    def prepare_canary(self, run_id: str) -> None: ...

    def session_factory(self, run_id: str, probe: ProbeConfig) -> SessionFactory: ...

    def inject(self, fault: FaultSpec) -> str:
        """Issue the fault; return a one-line description of what was done."""
        ...

    def clear(self, fault: FaultSpec) -> str:
        """End a timed fault (thaw a frozen node). A no-op for faults that do not end by themselves."""
        ...

    def promote(self, *, timeout_s: float) -> str:
        """Promote (or wait for the platform to promote) a standby; return who is primary now."""
        ...

    def recovered_nodes(self, fault: FaultSpec) -> frozenset[str] | None:
        """Nodes whose acknowledgement counts as recovery; None when any node of the endpoint does."""
        ...

    def read_back(self, run_id: str) -> frozenset[int]:
        """Sequence numbers of the canary records the current primary holds."""
        ...

    def restore_topology(self, *, timeout_s: float) -> str: ...

    def close(self) -> None: ...


@runtime_checkable
class PreparesFaults(Protocol):
    """A target that must set something up before the probes start for some faults, e.g. route the
    probes through a fault proxy so the network between them and the primary can be cut."""

    def prepare_fault(self, fault: FaultSpec) -> str:
        """Get ready for `fault`; return what was done. Call before the probes start."""
        ...
