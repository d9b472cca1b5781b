"""The evidence of a zone outage drill: where everything ran, what was cut and when, the RTO and loss
of each resource, and, on AWS, the FIS experiment's life.

Part of the evidence record (`EvidenceRecord.zones`, schema 1.3). Times are seconds from the drill's
start on the monotonic clock, like the rest of the record.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ZoneLinkRecord(_Frozen):
    zone: str
    namespace: str
    veth: str  # the fabric-side end a fault acts on
    peer: str
    address: str


class ZonePlacementRecord(_Frozen):
    server: str  # "pg-a", "redis-b", "sentinel-3", "probe postgres@client"
    resource: str  # "postgres", "redis", "client"
    zone: str
    address: str


class ZoneFaultRecord(_Frozen):
    kind: str  # "zone-lost", "zone-partition", "fis-experiment"
    zone: str
    island: list[str] = Field(default_factory=list)  # every zone cut off together
    links: list[ZoneLinkRecord] = Field(default_factory=list)
    issued_s: float  # just before the action
    returned_s: float  # when it returned: the cut is in effect
    heal_issued_s: float | None = None
    healed_s: float | None = None  # None: never healed while the drill ran (teardown healed it)


class ResourceRecord(_Frozen):
    """One row of the table: a resource as one group of clients saw it."""

    resource: str
    probe: str
    client_zone: str
    status: str  # "no outage", "recovered", "not recovered", "not measured"
    rto_s: float | None = None
    rto_floor_s: float | None = None  # the start of this probe's last failed write before recovery
    outage_seen: bool = False
    outage_s: float | None = None
    first_failure_s: float | None = None
    recovered_s: float | None = None
    recovered_node: str | None = None
    attempted: int = 0
    failed_writes: int = 0
    acknowledged_writes: int = 0
    verified: bool = False  # read back from the recovered store
    lost_writes: int | None = None  # None: not read back
    lost_seqs: list[int] = Field(default_factory=list)
    rpo_window_s: float | None = None
    stale_acks: int = 0  # acknowledged by the cut-off node after the fault
    split_brain_lost_seqs: list[int] = Field(default_factory=list)  # stale and missing from the store
    split_brain_exact: bool = False  # the loss is exactly the stale writes, by sequence number
    # A service in front of stores (its row only): the stores' rows it is set against, the slowest of
    # their RTOs, how much later the service was back, and what it was doing meanwhile.
    behind: list[str] = Field(default_factory=list)
    store_rto_s: float | None = None
    store_floor_s: float | None = None  # the latest moment one of those stores' probes still failed
    gap_s: float | None = None
    gap_phase: str = ""
    ordered: bool | None = None  # back no earlier than its stores were last seen down


class FisStateRecord(_Frozen):
    t_s: float
    status: str  # pending, initiating, running, completed, stopping, stopped, failed, cancelled
    reason: str = ""


class FisRecord(_Frozen):
    """The AWS FIS experiment of the drill: what it was asked to do and every state it went through."""

    region: str
    template_id: str | None = None
    template_created: bool = False  # firedrill created the template for this run (and deleted it)
    experiment_id: str | None = None
    actions: list[str] = Field(default_factory=list)  # "name: actionId -> targets"
    stop_conditions: list[str] = Field(default_factory=list)  # CloudWatch alarm ARNs
    states: list[FisStateRecord] = Field(default_factory=list)
    final_status: str | None = None
    stopped_by_firedrill: bool = False  # StopExperiment was sent (abort, Ctrl-C, deadline)
    error: str | None = None


class ZoneEvidence(_Frozen):
    mechanism: str  # how zones were made and cut, for the reader
    subnet: str | None = None
    zones: list[str] = Field(default_factory=list)
    links: list[ZoneLinkRecord] = Field(default_factory=list)
    placements: list[ZonePlacementRecord] = Field(default_factory=list)
    faults: list[ZoneFaultRecord] = Field(default_factory=list)
    resources: list[ResourceRecord] = Field(default_factory=list)
    fis: FisRecord | None = None
