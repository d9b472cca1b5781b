"""The interface of a zone outage drill: the zones (where the fault happens) and the resources in them.

A drill talks to these two Protocols only, locally (network namespaces, `firedrill.targets.zone_local`)
or on AWS (FIS, `firedrill.targets.aws_fis`). Differences show as capabilities (`partitions`,
`promotion_is_manual()`), never as `if environment == ...` in the drill.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from firedrill.evidence_zones import FisRecord, ZoneEvidence, ZoneFaultRecord
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.targets.base import TargetDescription


@dataclass(frozen=True, slots=True)
class ClientPlacement:
    """Where one probe of a resource runs: its name in the timeline and its zone."""

    resource: str
    zone: str

    @property
    def probe(self) -> str:
        return f"{self.resource}@{self.zone}"


class ZoneResource(Protocol):
    """One replicated store spread over the zones."""

    name: str  # "postgres", "redis"

    def describe(self) -> TargetDescription: ...

    def placements(self) -> list[tuple[str, str, str]]:
        """(server, zone, address) of every server of the resource."""
        ...

    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]: ...

    def prepare_canary(self, key: str) -> None: ...

    def session_factory(self, key: str, probe: ProbeConfig) -> SessionFactory: ...

    def before_fault(self) -> str:
        """Note who is primary now (the node a zone fault may take away); return it in words."""
        ...

    def fence(self, cut_zones: frozenset[str]) -> str:
        """After the fault took effect: treat the nodes in `cut_zones` as lost; say what that means."""
        ...

    def promotion_is_manual(self) -> bool: ...

    def promote(self, *, timeout_s: float) -> str:
        """Promote (or wait for the platform to promote) a node outside the cut zones."""
        ...

    def recovered_nodes(self) -> frozenset[str] | None:
        """Nodes whose acknowledgement counts as recovery; None when any node of the endpoint does."""
        ...

    def read_back(self, key: str) -> frozenset[int]: ...

    def restore_topology(self, *, timeout_s: float) -> str: ...


class ZoneOutage(Protocol):
    """The zones and the faults on them."""

    mechanism: str  # how zones are made and cut, for the evidence
    partitions: bool  # can cut a zone off while clients inside it keep writing (split brain)

    def resources(self, names: tuple[str, ...]) -> list[ZoneResource]:
        """The named resources ("postgres", "redis") in the zones, opened on first use."""
        ...

    def client_factory(self, zone: str, factory: SessionFactory) -> SessionFactory:
        """A factory whose sessions connect from `zone` (the probe's worker thread moves there)."""
        ...

    def control(self) -> AbstractContextManager[None]:
        """A block in which firedrill's own control connections reach every zone left reachable."""
        ...

    def check_steady_state(self) -> dict[str, str]:
        """Every zone reachable and no fault on."""
        ...

    def lose(self, zone: str) -> str:
        """Take the zone away (all its links at once); return what was done."""
        ...

    def partition(self, zone: str, *, with_zones: tuple[str, ...]) -> str: ...

    def cut_zones(self) -> frozenset[str]:
        """The zones currently cut off."""
        ...

    def heal(self) -> str:
        """Undo every fault that is on; '' when none was."""
        ...

    def layout(self) -> ZoneEvidence:
        """The zones, links and mechanism (no faults, no resources yet)."""
        ...

    def fault_records(self, t0: float) -> list[ZoneFaultRecord]: ...

    def fis_record(self, t0: float) -> FisRecord | None: ...
