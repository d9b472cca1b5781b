"""firedrill's pytest plugin (entry point `pytest11`): collects `.feature` files as drills and
provides the step library, the fixtures and the hooks, so a team's drills directory holds feature
files and a firedrill.toml, and no Python.

`pytest drills/`, `pytest my.feature` and `firedrill run ...` (a pytest session in a child process)
all go through here. Options, evidence and the ledger resolve against the working directory.
"""

from __future__ import annotations

import os
import signal
import threading
import types
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from pytest_bdd import scenarios
from pytest_bdd.parser import Feature, Scenario, Step

from firedrill.catalogue import DrillSpec, drill_for_feature, step_modules
from firedrill.config import Profile, get_profile
from firedrill.drills.base import Objectives
from firedrill.errors import HarnessError, first_line
from firedrill.manifest import append_manifest
from firedrill.run_context import RunContext, default_out
from firedrill.steps.holder import SCENARIO, DrillHolder
from firedrill.steps.objectives import objectives_from_steps
from firedrill.steps.registry import feature_tags
from firedrill.targets.base import FailoverTarget
from firedrill.targets.factory import open_target

# The step library: the steps every drill shares, then each catalogued drill's (pytest loads them
# as plugins, so their step definitions and fixtures are visible to every collected feature).
pytest_plugins = ["firedrill.steps.common", *step_modules()]

OBJECTIVES = pytest.StashKey[Objectives]()
DRILL_MARKERS = {
    "postgres": "drills against PostgreSQL",
    "redis": "drills against Redis",
    "failover": "failover drills",
    "pitr": "point-in-time restore drills",
    "cache": "cache drills",
    "local": "runs on the embedded local staging",
    "aws": "runs against AWS",
    "calibration": "calibration against injected ground truth",
    "slow": "long-running",
    "load": "runs under a background load",
}
# Which environment a scenario needs, by its tag, and the profile kind that provides it. A scenario
# with environment tags runs only on a profile whose kind maps to one of them; an untagged one
# runs everywhere.
ENV_TAGS = {
    "local": "local",
    "aws": "aws",
    "local-ha": "local_ha",
    "patroni": "patroni",
    "sentinel": "sentinel",
}
ENV_NEEDS = {
    "local": "the local staging",
    "aws": "an AWS profile",
    "local_ha": "the local HA staging (Patroni + etcd)",
    "patroni": "a Patroni cluster profile",
    "sentinel": "a Redis Sentinel profile",
}
DRILL_MARKERS.update({tag: f"needs {need}" for tag, need in ENV_NEEDS.items() if tag not in DRILL_MARKERS})
_INTERRUPTED = threading.Event()


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
        help="where evidence and reports go (default: ./reports/out)",
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
    parser.addini(
        "firedrill_collect_features", "collect .feature files as firedrill drills", type="bool", default=True
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, meaning in DRILL_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")


class FeatureFile(pytest.Module):
    """A `.feature` file collected as a module whose tests are its scenarios (pytest-bdd's
    `scenarios()`, run in a module namespace made for the file)."""

    def _getobj(self) -> types.ModuleType:
        module = types.ModuleType(f"firedrill_feature_{self.path.stem}")
        module.__file__ = str(self.path)
        # scenarios() puts one test function per scenario into its caller's namespace.
        code = compile("scenarios(FEATURE_PATH)", str(self.path), "exec")
        exec(
            code, {**module.__dict__, "scenarios": scenarios, "FEATURE_PATH": str(self.path)}, module.__dict__
        )
        return module


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix != ".feature" or not parent.config.getini("firedrill_collect_features"):
        return None
    for tag in feature_tags(file_path):  # Gherkin tags are markers: register them, as a user would
        parent.config.addinivalue_line("markers", f"{tag}: Gherkin tag")
    collector: pytest.Collector = FeatureFile.from_parent(parent, path=file_path)
    return collector


def _manifest(config: pytest.Config) -> Path | None:
    value = config.getoption("firedrill_manifest")
    return Path(value) if value else None


def _profile_from(config: pytest.Config) -> Profile:
    cfg = config.getoption("firedrill_config")
    return get_profile(config.getoption("firedrill_env"), Path(cfg) if cfg else None)


def _install_signal_handlers() -> None:
    """Ctrl-C and SIGTERM unwind as KeyboardInterrupt, so fixtures tear the staging down, and are
    remembered, so the evidence of the drill they cut short says 'aborted'."""

    def _interrupt(signum: int, frame: object) -> None:
        _INTERRUPTED.set()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A scenario tagged for an environment (@local, @aws, @local_ha, @patroni, @sentinel) runs only
    on a profile of that kind (ENV_TAGS). Only a session that runs drills takes over SIGTERM."""
    drills = [item for item in items if item.getparent(FeatureFile) is not None]
    if not drills:
        return
    _install_signal_handlers()
    try:
        kind = _profile_from(config).kind
    except HarnessError:  # a bad profile is reported by the `profile` fixture, as one line
        return
    wanted = ENV_TAGS.get(kind)
    for item in drills:
        tags = [tag for tag in ENV_NEEDS if item.get_closest_marker(tag)]
        if tags and wanted not in tags:
            needs = " or ".join(f"{ENV_NEEDS[t]} (@{t})" for t in tags)
            item.add_marker(pytest.mark.skip(reason=f"needs {needs}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A harness error (bad profile, missing binaries, staging failed) is one line for the CLI."""
    report = yield
    manifest = _manifest(item.config)
    if manifest and call.excinfo is not None and isinstance(call.excinfo.value, HarnessError):
        append_manifest(manifest, {"error": first_line(call.excinfo.value)})
    return report


@pytest.fixture(scope="session")
def profile(pytestconfig: pytest.Config) -> Profile:
    return _profile_from(pytestconfig)


@pytest.fixture(scope="session")
def run_context(pytestconfig: pytest.Config, profile: Profile) -> RunContext:
    out = pytestconfig.getoption("firedrill_out")
    return RunContext(
        environment=profile.name,
        via=pytestconfig.getoption("firedrill_via"),
        out_root=Path(out).resolve() if out else default_out(),
    )


@pytest.fixture(scope="module")
def postgres_target(profile: Profile) -> Iterator[FailoverTarget]:
    with open_target("postgres", profile) as target:
        yield target


def drill_name_of(path: Path) -> str:
    """The catalogue's name for a feature file (or a copy of it), else the file's own stem."""
    spec: DrillSpec | None = drill_for_feature(path)
    return spec.name if spec is not None else path.stem.replace("_", "-")


@pytest.fixture
def holder(
    request: pytest.FixtureRequest, profile: Profile, run_context: RunContext
) -> Iterator[DrillHolder]:
    base = Objectives(rto_s=profile.objectives.rto_s, rpo_s=profile.objectives.rpo_s)
    objectives = request.node.stash.get(OBJECTIVES, base)
    h = DrillHolder(profile=profile, ctx=run_context, objectives=objectives)
    h.drill_name = drill_name_of(Path(str(request.node.path)))
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
