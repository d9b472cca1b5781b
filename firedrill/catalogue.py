"""The drill catalogue: the one list of drills that the runner, `plan`, the CLI help, the schedule
and the period report read.

Each drill declares itself once, as a `DrillSpec` in its own module, and is registered through the
`firedrill.drills` entry-point group: firedrill's own drills in its pyproject.toml, another package's
drills in that package's metadata. Adding a drill therefore needs a feature file, a drill module
(with its steps) and at most one adapter, and no change to any engine file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

from firedrill.errors import ConfigError, first_line

ENTRY_POINT_GROUP = "firedrill.drills"
BUILTIN_FEATURES = Path(__file__).resolve().parent / "features"

# What the period report counts a drill as: a failover test, a restore-from-backup test (PITR), a
# backup test (objects or snapshots brought back), or a check of firedrill's own measurement.
Category = Literal["failover", "restore", "backup", "calibration"]
CATEGORIES: tuple[Category, ...] = ("failover", "restore", "backup", "calibration")


@dataclass(frozen=True, slots=True)
class LocalPlan:
    """What a drill does on the embedded staging, for `firedrill plan` (nothing outside a temp dir)."""

    starts: str  # e.g. "a PostgreSQL primary and a streaming standby"
    faults: str  # e.g. "kill / stop / freeze the primary"


@dataclass(frozen=True, slots=True)
class DrillSpec:
    name: str  # as `firedrill run NAME` knows it
    summary: str  # one line for `--help` and the schedule
    feature: Path  # the built-in feature file
    category: Category
    stores: tuple[str, ...]  # target kinds it drills: "postgres", "redis", "restore", ...
    steps: tuple[str, ...]  # importable step-library modules its feature's steps come from
    local_plan: LocalPlan
    # "module:function" of the AWS planner, f(AwsSession, Profile) -> (checks, changes); resolved
    # only when an AWS plan is asked for, so the catalogue never imports boto3-backed adapters.
    aws_plan: str | None = None
    in_all: bool = True  # part of `firedrill run all` and the quarterly schedule
    # "module:function" f(Profile) -> (checks, changes): the exact local changes, when a drill touches more
    # than processes in a temp directory (the zone drill's namespaces and links); resolved on demand.
    local_changes: str | None = None


@cache
def catalogue() -> dict[str, DrillSpec]:
    """Every registered drill by name, in registration order (firedrill's own first)."""
    found: dict[str, DrillSpec] = {}
    eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.dist is None, ep.value))
    for ep in eps:
        try:
            spec = ep.load()
        except Exception as exc:  # a broken third-party drill must name itself, not crash the CLI
            raise ConfigError(f"drill '{ep.name}' ({ep.value}) cannot be loaded: {first_line(exc)}") from exc
        if not isinstance(spec, DrillSpec):
            raise ConfigError(f"drill '{ep.name}' ({ep.value}) is not a firedrill DrillSpec")
        if spec.name in found and found[spec.name] != spec:
            raise ConfigError(f"two drills are named '{spec.name}' ({ep.value})")
        found[spec.name] = spec
    return found


def drill_names(*, scheduled_only: bool = False) -> list[str]:
    return [s.name for s in catalogue().values() if s.in_all or not scheduled_only]


def get_drill(name: str) -> DrillSpec:
    specs = catalogue()
    if name not in specs:
        raise ConfigError(f"unknown drill '{name}' (known: {', '.join([*specs, 'all'])})")
    return specs[name]


def drill_for_feature(path: Path) -> DrillSpec | None:
    """The drill a feature file belongs to: the built-in file itself, or a copy of it under the same
    name (what `firedrill init` writes); None for a team's own feature."""
    resolved = path.resolve()
    by_file = {s.feature.name: s for s in catalogue().values()}
    for spec in catalogue().values():
        if spec.feature.resolve() == resolved:
            return spec
    return by_file.get(path.name)


def step_modules() -> list[str]:
    """Every step-library module of every registered drill, once each, in catalogue order."""
    seen: dict[str, None] = {}
    for spec in catalogue().values():
        seen.update(dict.fromkeys(spec.steps))
    return list(seen)
