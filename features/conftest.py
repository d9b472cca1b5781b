"""Fixtures and pytest-bdd hooks for the drills. Step definitions live in features/steps/."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_bdd.parser import Feature, Scenario, Step

from drills.base import Objectives
from features.objectives import objectives_from_steps
from features.steps.aws_steps import *  # noqa: F403
from features.steps.cache_steps import *  # noqa: F403
from features.steps.calibration_steps import *  # noqa: F403
from features.steps.common import SCENARIO, DrillHolder
from features.steps.failover_steps import *  # noqa: F403  (step definitions are fixtures)
from features.steps.pitr_steps import *  # noqa: F403
from harness.config import Profile, get_profile
from harness.errors import HarnessError
from harness.run_context import DEFAULT_OUT, RunContext
from harness.runner import append_manifest
from harness.targets.base import FailoverTarget
from harness.targets.factory import open_target

OBJECTIVES = pytest.StashKey[Objectives]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("firedrill")
    group.addoption(
        "--env",
        dest="firedrill_env",
        default=os.environ.get("FIREDRILL_ENV", "local"),
        help="environment profile to drill (default: local staging)",
    )
    group.addoption(
        "--firedrill-config",
        dest="firedrill_config",
        default=None,
        help="profiles file (default: ./firedrill.toml if present)",
    )
    group.addoption(
        "--firedrill-out",
        dest="firedrill_out",
        default=None,
        help="where evidence and reports go (default: reports/out)",
    )
    group.addoption(
        "--firedrill-via",
        dest="firedrill_via",
        default="pytest",
        help="who started the run: pytest, cli or schedule",
    )
    group.addoption(
        "--firedrill-manifest",
        dest="firedrill_manifest",
        default=None,
        help="file to list evidence and harness errors in (used by `firedrill run`)",
    )


_INTERRUPTED = threading.Event()


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C and SIGTERM unwind as KeyboardInterrupt, so fixtures tear the staging down, and are
    remembered, so the evidence of the drill they cut short says 'aborted'."""

    def _interrupt(signum: int, frame: object) -> None:
        _INTERRUPTED.set()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)


def _manifest(config: pytest.Config) -> Path | None:
    value = config.getoption("firedrill_manifest")
    return Path(value) if value else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[object]:
    """A harness error (bad profile, missing binaries, staging failed) is one line for the CLI."""
    report = yield
    manifest = _manifest(item.config)
    if manifest and call.excinfo is not None and isinstance(call.excinfo.value, HarnessError):
        append_manifest(manifest, {"error": str(call.excinfo.value).splitlines()[0]})
    return report


@pytest.fixture(scope="session")
def profile(pytestconfig: pytest.Config) -> Profile:
    cfg = pytestconfig.getoption("firedrill_config")
    return get_profile(pytestconfig.getoption("firedrill_env"), Path(cfg) if cfg else None)


@pytest.fixture(scope="session")
def run_context(pytestconfig: pytest.Config, profile: Profile) -> RunContext:
    out = pytestconfig.getoption("firedrill_out")
    return RunContext(
        environment=profile.name,
        via=pytestconfig.getoption("firedrill_via"),
        out_root=Path(out) if out else DEFAULT_OUT,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """@local scenarios need the embedded staging; @aws ones need an AWS profile."""
    try:
        kind = get_profile(
            config.getoption("firedrill_env"),
            Path(c) if (c := config.getoption("firedrill_config")) else None,
        ).kind
    except Exception:  # a bad profile is reported by the `profile` fixture, as one line
        return
    for item in items:
        if kind != "local" and item.get_closest_marker("local"):
            item.add_marker(pytest.mark.skip(reason="needs the local staging (@local)"))
        if kind != "aws" and item.get_closest_marker("aws"):
            item.add_marker(pytest.mark.skip(reason="needs an AWS profile (@aws)"))


@pytest.fixture(scope="module")
def postgres_target(profile: Profile) -> Iterator[FailoverTarget]:
    with open_target("postgres", profile) as target:
        yield target


@pytest.fixture
def holder(
    request: pytest.FixtureRequest, profile: Profile, run_context: RunContext
) -> Iterator[DrillHolder]:
    base = Objectives(rto_s=profile.objectives.rto_s, rpo_s=profile.objectives.rpo_s)
    objectives = request.node.stash.get(OBJECTIVES, base)
    h = DrillHolder(profile=profile, ctx=run_context, objectives=objectives)
    # features/test_cache_failover.py -> "cache-failover": the drill's name as `firedrill run` knows it
    h.drill_name = request.node.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    yield h
    if _INTERRUPTED.is_set():
        h.record_failure(KeyboardInterrupt("interrupted by signal"))
    record = h.conclude()  # evidence is written for every scenario, passed or failed
    manifest = _manifest(request.config)
    if manifest and record is not None and h.run is not None and h.run.evidence_path:
        append_manifest(manifest, {"evidence": str(h.run.evidence_path)})


def pytest_bdd_before_scenario(request: pytest.FixtureRequest, feature: Feature, scenario: Scenario) -> None:
    profile = request.getfixturevalue("profile")
    base = Objectives(rto_s=profile.objectives.rto_s, rpo_s=profile.objectives.rpo_s)
    texts = [s.name for s in scenario.steps if s.type == "then"]
    request.node.stash[SCENARIO] = (scenario.name, texts)
    request.node.stash[OBJECTIVES] = objectives_from_steps(texts, base)
    h: DrillHolder = request.getfixturevalue("holder")
    h.objectives = request.node.stash[OBJECTIVES]
    h.scenario = scenario.name


def pytest_bdd_step_error(
    request: pytest.FixtureRequest,
    feature: Feature,
    scenario: Scenario,
    step: Step,
    step_func: object,
    step_func_args: dict[str, object],
    exception: Exception,
) -> None:
    """A step that raised (not a Then that found a breach) is recorded in the evidence."""
    if isinstance(exception, AssertionError):
        return
    h: DrillHolder = request.getfixturevalue("holder")
    h.record_failure(exception)
