"""Steps of production-like drills: a background load beside the canary, the staging knobs
(replication, synchronous_commit, Redis min-replicas-to-write and appendfsync) a scenario sets, and
the service probe through an application (the reference application, or the profile's URL).

A knob step changes the running, module-scoped staging in place before the drill's steady state, and
the change is put back after the scenario's drill has concluded; the reference application lives for
one scenario. Both are undone by the `scenario_cleanup` fixture: it is autouse, so it is set up
before the drill's holder and torn down after it (evidence written, topology restored), and the next
scenario starts from the profile's settings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from pytest_bdd import given, parsers

from firedrill.drills.load import BackgroundLoad
from firedrill.drills.service import ServiceProbe
from firedrill.errors import ConfigError, HarnessError, StagingError, first_line
from firedrill.load.generator import LoadSpec
from firedrill.probes import ProbeConfig
from firedrill.staging.reference_app import ReferenceApp
from firedrill.steps.holder import DrillHolder
from firedrill.targets.knobs import Restore, replication_mode, set_pg_knobs, set_redis_knobs, sync_commit
from firedrill.targets.load_binding import bind_load
from firedrill.targets.local_postgres import LocalPostgresTarget
from firedrill.targets.local_redis import LocalRedisTarget
from firedrill.timeline import EventKind

log = logging.getLogger(__name__)
DEFAULT = LoadSpec()

LOAD = re.compile(
    r"a background load of (?P<writers>\d+) writers? at (?P<rate>\d+(?:\.\d+)?) writes per second"
    r"(?: with (?P<reads>\d+(?:\.\d+)?)% reads)?(?:(?: and| with) (?P<row>\d+)-byte rows)?"
)


@pytest.fixture(autouse=True)
def scenario_cleanup() -> Iterator[list[Restore]]:
    """Restorers of the staging knobs a scenario changed, run after its drill concluded."""
    restores: list[Restore] = []
    yield restores
    problems = []
    for restore in reversed(restores):
        try:
            log.info("%s", restore())
        except HarnessError as exc:
            problems.append(first_line(exc))
    if problems:
        raise StagingError("the staging's knobs could not be put back: " + "; ".join(problems))


def _attach(holder: DrillHolder, spec: LoadSpec) -> None:
    drill = holder.current_failover()
    if any(isinstance(t, BackgroundLoad) for t in drill.run.traffic):
        raise ConfigError("this scenario already has a background load (one per scenario)")
    if drill.run.timeline.first(EventKind.PROBES_STARTED) is not None:
        raise ConfigError("a background load must be given before the drill's steady state and fault")
    drill.run.traffic.append(BackgroundLoad(bind_load(drill.target, drill.run.run_id, spec), spec))


@given(parsers.re(LOAD.pattern))
def background_load(holder: DrillHolder, writers: str, rate: str, reads: str | None, row: str | None) -> None:
    """Runs a background load from before the fault through recovery; every acked write is read back."""
    base = holder.profile.load
    spec = LoadSpec(
        writers=int(writers),
        rate_per_s=float(rate),
        read_share=float(reads) / 100 if reads else 0.0,
        row_bytes=int(row) if row else (base.row_bytes if base else DEFAULT.row_bytes),
        op_timeout_s=base.op_timeout_s if base else DEFAULT.op_timeout_s,
    )
    _attach(holder, spec)


@given("the profile's background load")
def profile_load(holder: DrillHolder) -> None:
    """Runs the background load the profile's [load] section describes (writers, rate, reads, row size)."""
    s = holder.profile.load
    if s is None:
        raise ConfigError(
            f"profile '{holder.profile.name}' has no [profiles.{holder.profile.name}.load] section"
        )
    _attach(
        holder,
        LoadSpec(
            writers=s.writers,
            rate_per_s=s.rate_per_s,
            read_share=s.read_share,
            row_bytes=s.row_bytes,
            op_timeout_s=s.op_timeout_s,
        ),
    )


@given(parsers.re(r"(?P<mode>synchronous|asynchronous|quorum) replication"))
def replication(holder: DrillHolder, scenario_cleanup: list[Restore], mode: str) -> None:
    """Sets PostgreSQL replication (quorum: ANY 1) on the staging for this scenario, before steady state."""
    target = holder.current_failover().target
    scenario_cleanup.append(set_pg_knobs(target, replication=replication_mode(mode)))


@given(parsers.parse("synchronous_commit is {value}"))
def synchronous_commit(holder: DrillHolder, scenario_cleanup: list[Restore], value: str) -> None:
    """Sets PostgreSQL synchronous_commit (on, remote_write, remote_apply, local, off) for this scenario."""
    target = holder.current_failover().target
    scenario_cleanup.append(set_pg_knobs(target, synchronous_commit=sync_commit(value)))


@given(parsers.parse("Redis min-replicas-to-write is {count}"))
def min_replicas(holder: DrillHolder, scenario_cleanup: list[Restore], count: str) -> None:
    """Sets Redis min-replicas-to-write on every data node for this scenario."""
    if not count.isdigit():
        raise ConfigError(f"min-replicas-to-write must be a whole number, not {count!r}")
    target = holder.current_failover().target
    scenario_cleanup.append(set_redis_knobs(target, min_replicas_to_write=int(count)))


@given(parsers.parse("Redis appendfsync is {policy}"))
def appendfsync(holder: DrillHolder, scenario_cleanup: list[Restore], policy: str) -> None:
    """Turns Redis AOF on with this appendfsync policy (always, everysec, no) for this scenario."""
    target = holder.current_failover().target
    scenario_cleanup.append(set_redis_knobs(target, appendfsync=policy))


def _attach_service(holder: DrillHolder, probe: ServiceProbe) -> None:
    run = holder.current_failover().run
    if any(isinstance(t, ServiceProbe) for t in run.traffic):
        raise ConfigError("this scenario already has a service probe (one per scenario)")
    if run.timeline.first(EventKind.PROBES_STARTED) is not None:
        raise ConfigError("a service probe must be given before the drill's steady state and fault")
    run.traffic.append(probe)


@given(parsers.re(r"the reference application in front of the (?P<what>database|cache)"))
def reference_app(holder: DrillHolder, scenario_cleanup: list[Restore], what: str) -> None:
    """Starts the reference web service (connection pool, Sentinel client) and probes through it over HTTP."""
    target = holder.current_failover().target
    if what == "database" and isinstance(target, LocalPostgresTarget):
        app = ReferenceApp(pg_conninfo=target.endpoint().conninfo())
        store = "pg"
    elif what == "cache" and isinstance(target, LocalRedisTarget):
        endpoint = target.endpoint()
        app = ReferenceApp(sentinels=endpoint.sentinels, redis_service=endpoint.service_name)
        store = "redis"
    else:
        raise ConfigError(
            f"the reference application runs in front of the local staging's {what} only; "
            "probe your own service with [profiles.<name>.service] url and "
            '"Given service probes through the application at the profile\'s URL"'
        )
    app.start()

    def stop() -> str:
        app.stop()
        return "reference application stopped"

    scenario_cleanup.append(stop)
    run = holder.current_failover().run
    label = (
        f"reference application {app.url} ({'PostgreSQL pool' if store == 'pg' else 'Redis Sentinel client'})"
    )
    timeout = holder.profile.recovery_timeout_s
    _attach_service(
        holder, ServiceProbe(app.url, run.probe_config, store=store, label=label, recovery_timeout_s=timeout)
    )


@given("service probes through the application at the profile's URL")
def profile_service(holder: DrillHolder) -> None:
    """Probes the service at the profile's [service] url: numbered HTTP writes, read back through it."""
    s = holder.profile.service
    if s is None:
        name = holder.profile.name
        raise ConfigError(f"profile '{name}' has no [profiles.{name}.service] section with a url")
    probe = ProbeConfig(rate_hz=s.rate_hz, op_timeout_s=s.op_timeout_s)
    _attach_service(holder, ServiceProbe(s.url, probe, recovery_timeout_s=holder.profile.recovery_timeout_s))
