"""A background load as part of a drill: started just before the canary (so the baseline runs under
it), through the fault and recovery, stopped with the probes, every acknowledged write read back from
the recovered store, and folded into the verdict.

- Loss: the drill's `lost_writes` objective is judged on the canary's lost writes plus the load's, and
  `rpo` on the larger of the two windows; a load that could not be read back leaves both unmeasured
  (not met), never zero.
- Checks: "every acknowledged load write is on the recovered store" (blocking where the scenario
  promises no loss, else a finding) and "the background load reached its requested rate" (always a
  finding, never a breach: it judges the harness's client, not the platform).
- The figures (`EvidenceRecord.load`) come from the pure `firedrill.load.accounting`.
"""

from __future__ import annotations

from typing import Any

from firedrill.drills.base import DrillRun
from firedrill.errors import HarnessError, first_line
from firedrill.load.accounting import LoadShape, summarize
from firedrill.load.generator import LoadGenerator, LoadSpec
from firedrill.targets.load_binding import LoadBinding
from firedrill.timeline import EventKind

LOSS_CHECK = "every acknowledged load write is on the recovered store"
RATE_CHECK = "the background load reached its requested rate"


def _seqs(seqs: list[int], limit: int = 20) -> str:
    return ", ".join(map(str, seqs[:limit])) + (" ..." if len(seqs) > limit else "")


class BackgroundLoad:
    """`firedrill.drills.base.Traffic` for a load generator over one store binding."""

    def __init__(self, binding: LoadBinding, spec: LoadSpec) -> None:
        self.binding = binding
        self.spec = spec
        self.generator: LoadGenerator | None = None
        self._stopped = False
        self._present: frozenset[int] | None = None
        self._verify_error: str | None = None

    def start(self, run: DrillRun) -> None:
        if self.generator is not None:
            return
        self.binding.prepare()
        self.generator = LoadGenerator(self.binding.factory, self.spec)
        self.generator.start()
        run.mark(EventKind.NOTE, f"background load started on {self.binding.store}: {self.spec.describe()}")

    def stop(self, run: DrillRun) -> None:
        gen = self.generator
        if gen is None or self._stopped:
            return
        self._stopped = True
        gen.stop()
        samples = gen.samples()
        run.mark(EventKind.NOTE, f"background load stopped after {len(samples):,} operations")
        try:
            self._present = self.binding.read_back()
        except HarnessError as exc:
            self._verify_error = first_line(exc)

    def conclude(self, run: DrillRun, values: dict[str, float | None]) -> dict[str, Any]:
        gen = self.generator
        if gen is None or gen.started_at is None:
            return {}
        self.stop(run)
        _, events = run.timeline.snapshot()
        fault = min((e.mono for e in events if e.kind is EventKind.FAULT_ISSUED), default=None)
        recovered = min((e.mono for e in events if e.kind is EventKind.RECOVERED), default=None)
        spec = self.spec
        stats = summarize(
            gen.samples(),
            LoadShape(
                self.binding.store,
                self.binding.client,
                spec.writers,
                spec.rate_per_s,
                spec.read_share,
                spec.row_bytes,
            ),
            t0=run.started_mono,
            started=gen.started_at,
            stopped=gen.stopped_at or gen.started_at,
            fault_at=fault,
            recovered_at=recovered,
            present=self._present,
            verify_error=self._verify_error,
        )
        if stats.lost_writes is None:
            detail = f"not read back: {self._verify_error or 'the load was not verified'}"
        else:
            detail = f"{stats.acknowledged_writes - stats.lost_writes}/{stats.acknowledged_writes} present"
            if stats.lost_writes:
                detail += f"; lost seq {_seqs(stats.lost_seqs)}"
        run.check(
            LOSS_CHECK, stats.lost_writes == 0, detail, blocking=run.objectives.max_lost_writes is not None
        )
        run.check(
            RATE_CHECK,
            stats.reached,
            stats.note
            or f"{stats.achieved_per_s:g} of {stats.requested_per_s:g} operations/s while the service was up",
            blocking=False,
        )
        if "lost_writes" in values:
            canary = values["lost_writes"]
            values["lost_writes"] = (
                None if canary is None or stats.lost_writes is None else canary + stats.lost_writes
            )
        if "rpo" in values:
            canary_rpo = values["rpo"]
            values["rpo"] = (
                None
                if canary_rpo is None or stats.rpo_window_s is None
                else max(canary_rpo, stats.rpo_window_s)
            )
        return {"load": stats}
