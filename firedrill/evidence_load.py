"""The evidence of the traffic beside the canary: a background load and a service-level probe.

Part of the evidence record (`EvidenceRecord.load`, `EvidenceRecord.service`, schema 1.2). Only
aggregates go in here: per-window and per-phase throughput and latency, and the exact list of lost
sequence numbers; never one record per operation (a minute at 2000 writes/s is 120,000 of them).
All times are seconds from the drill's start on the monotonic clock, like the rest of the record.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PhaseName = Literal["before", "during", "after"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LoadWindow(_Frozen):
    """One fixed-width slice of the load's life: what was attempted, acknowledged, how fast."""

    t_s: float  # window start
    dur_s: float
    ok: int  # acknowledged operations (writes and reads)
    failed: int
    ops_per_s: float  # acknowledged operations per second
    p50_ms: float | None = None  # latency of the acknowledged operations; None: none acknowledged
    p99_ms: float | None = None


class LoadPhase(_Frozen):
    """Before the fault, during the outage (fault to recovery), after recovery."""

    name: PhaseName
    start_s: float
    end_s: float
    attempted: int
    ok: int
    failed: int
    attempted_per_s: float  # the rate the generator managed to issue
    ok_per_s: float  # acknowledged throughput
    p50_ms: float | None = None
    p99_ms: float | None = None


class LoadStats(_Frozen):
    """A background load: how it ran against what was asked, and what survived of it."""

    store: str  # "postgres", "redis"
    client: str  # how the load connects, for the reader (e.g. multi-host conninfo, Sentinel)
    writers: int
    requested_per_s: float
    achieved_per_s: float  # attempted operations per second while the service was up
    reached: bool  # achieved at least REACHED_SHARE of the requested rate
    read_share: float
    row_bytes: int
    started_s: float
    stopped_s: float
    attempted: int
    acknowledged_writes: int
    failed_writes: int
    reads_ok: int
    reads_failed: int
    errors: dict[str, int] = Field(default_factory=dict)
    verified: bool  # the acknowledged writes were read back from the recovered store
    verify_error: str | None = None
    lost_writes: int | None = None
    lost_seqs: list[int] = Field(default_factory=list)
    lost_from_s: float | None = None  # acknowledgement of the earliest lost write
    lost_to_s: float | None = None  # acknowledgement of the latest lost write
    rpo_window_s: float | None = None  # last surviving ack before the last lost one, to it
    unacknowledged_present: int | None = None  # failed for the client, yet in the store
    first_failure_s: float | None = None  # first failed load operation after the fault
    recovered_s: float | None = None  # first acknowledged load write after that failure
    phases: list[LoadPhase] = Field(default_factory=list)
    windows: list[LoadWindow] = Field(default_factory=list)
    note: str = ""


class ServiceStats(_Frozen):
    """The service-level probe: sequence-numbered records written through an application endpoint."""

    url: str
    target_hz: float
    attempted: int
    acknowledged: int
    failed: int
    errors: dict[str, int] = Field(default_factory=dict)
    rto_s: float | None = None  # fault to the first acknowledged request after the outage
    store_rto_s: float | None = None  # the canary's, straight at the store, for the side-by-side
    gap_s: float | None = None  # service RTO - store RTO: the application's own part of the outage
    gap_phase: str = ""  # what the application did meanwhile, e.g. "pool reconnect"
    first_failure_s: float | None = None
    recovered_s: float | None = None
    verified: bool = False
    verify_error: str | None = None
    lost_writes: int | None = None
    lost_seqs: list[int] = Field(default_factory=list)
    rpo_window_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
