"""Drill results as a Prometheus text file (node exporter textfile collector), via `prometheus_client`.

Gauges, labelled by drill, scenario and environment (the profile name):

    firedrill_rto_seconds                  measured RTO (absent when not measured)
    firedrill_rpo_window_seconds           RPO window (absent when not measured)
    firedrill_lost_writes                  acknowledged writes lost (absent when not measured)
    firedrill_drill_passed                 1 when the verdict is "passed", else 0
    firedrill_last_run_timestamp_seconds   end of the run, Unix time

When several records share one label set, the one that finished last wins. A missing figure is left
out rather than written as NaN, so `absent()` alerts and "value > limit" alerts both work.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from firedrill.audit.timestamps import parse_utc
from firedrill.errors import ConfigError
from firedrill.evidence import EvidenceRecord

LABELS = ("drill", "scenario", "environment")


def build_registry(records: Iterable[EvidenceRecord]) -> CollectorRegistry:
    registry = CollectorRegistry()
    rto = Gauge(
        "firedrill_rto_seconds", "Measured recovery time of the last drill run", LABELS, registry=registry
    )
    rpo = Gauge(
        "firedrill_rpo_window_seconds",
        "RPO window of the last drill run (last surviving to last acknowledged write)",
        LABELS,
        registry=registry,
    )
    lost = Gauge(
        "firedrill_lost_writes", "Acknowledged writes lost in the last drill run", LABELS, registry=registry
    )
    passed = Gauge(
        "firedrill_drill_passed", "1 if the last drill run passed, else 0", LABELS, registry=registry
    )
    last = Gauge(
        "firedrill_last_run_timestamp_seconds",
        "Unix time at which the last drill run finished",
        LABELS,
        registry=registry,
    )
    latest: dict[tuple[str, str, str], tuple[float, EvidenceRecord]] = {}
    for record in records:
        key = (record.drill, record.scenario, record.environment.name)
        finished = _timestamp(record.finished_at, record.run_id)
        if key not in latest or finished >= latest[key][0]:
            latest[key] = (finished, record)
    for key, (finished, record) in sorted(latest.items()):
        labels = dict(zip(LABELS, key, strict=True))
        m = record.measurements
        if m.rto_s is not None:
            rto.labels(**labels).set(m.rto_s)
        if m.rpo_window_s is not None:
            rpo.labels(**labels).set(m.rpo_window_s)
        if m.lost_writes is not None:
            lost.labels(**labels).set(m.lost_writes)
        passed.labels(**labels).set(1 if record.verdict == "passed" else 0)
        last.labels(**labels).set(finished)
    return registry


def write_metrics(path: Path, records: Iterable[EvidenceRecord]) -> Path:
    """Write the gauges for `records` to `path` (must end in .prom), atomically (temp file + rename)."""
    path = Path(path)
    if path.suffix != ".prom":
        raise ConfigError(f"metrics file {path} must end in .prom (the textfile collector reads only those)")
    registry = build_registry(records)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), registry)
    except OSError as exc:
        raise ConfigError(f"cannot write metrics file {path}: {exc.strerror}") from exc
    return path


def _timestamp(stamp: str, run_id: str) -> float:
    return parse_utc(stamp, f"run {run_id}: finished_at").timestamp()
