"""Steps of the zone outage drill: one call into drills/ each.

The zones live as long as the feature file (module-scoped fixture); each scenario restores the
topology and heals the network before the next one proves its own steady state. Without network
namespaces (not root, no `ip`), the @zones @local scenarios are skipped at collection with one line,
before anything starts; everything else runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from pytest_bdd import given, parsers, then, when

from firedrill.config import Profile
from firedrill.drills.zone_loss import SPLIT_BRAIN_EXACT, ZoneDrill, ZoneDrillSettings
from firedrill.errors import ConfigError
from firedrill.staging.zones import namespaces_unavailable
from firedrill.steps.holder import SCENARIO, DrillHolder
from firedrill.targets.aws_fis import open_fis_zones
from firedrill.targets.zone_base import ZoneOutage, ZoneResource
from firedrill.targets.zone_local import LocalZoneOutage, open_local_zones

NO_LOSS_OF = re.compile(r"no acknowledged write to (?P<resource>\w+) is lost")
RESOURCES = {"postgresql": "postgres", "postgres": "postgres", "redis": "redis"}


_SKIPPED: list[str] = []  # why the zone scenarios of this session were skipped (for the summary line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """@zones scenarios on the local staging need network namespaces: skipped, before anything starts."""
    why = namespaces_unavailable()
    if why is None:
        return
    skipped = [i for i in items if i.get_closest_marker("zones") and i.get_closest_marker("local")]
    for item in skipped:
        item.add_marker(pytest.mark.skip(reason=why))
    if skipped:
        _SKIPPED[:] = [f"firedrill: {len(skipped)} zone scenario(s) skipped: {why}"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The one line saying why, also in a quiet `firedrill run`."""
    for line in _SKIPPED:
        terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def zone_outage(profile: Profile) -> Iterator[ZoneOutage]:
    """The profile's zones: local network namespaces (and the stagings placed in them), or AWS FIS."""
    if profile.kind == "local":
        with open_local_zones(profile) as local:
            yield local
    elif profile.kind == "aws":
        if profile.aws is None or profile.aws.fis is None:
            pytest.skip(f"the AWS zone scenario needs [profiles.{profile.name}.aws.fis] (its FIS experiment)")
        with open_fis_zones(profile) as fis:
            yield fis
    else:
        pytest.skip(f"zone scenarios run on a local or AWS profile, not kind = '{profile.kind}'")


def _drill(
    holder: DrillHolder, request: pytest.FixtureRequest, outage: ZoneOutage, resources: list[ZoneResource]
) -> ZoneDrill:
    if isinstance(holder.drill, ZoneDrill):
        return holder.drill
    _, then_texts = request.node.stash.get(SCENARIO, ("", []))
    no_loss = set()
    for text in then_texts:
        if m := NO_LOSS_OF.fullmatch(text):
            no_loss.add(_resource(m["resource"]))
    run = holder.probed_run("zone-loss")
    drill = ZoneDrill(
        run,
        outage,
        resources,
        clients_zone=holder.profile.zones.clients,
        no_loss=frozenset(no_loss),
        settings=ZoneDrillSettings(recovery_timeout_s=holder.profile.recovery_timeout_s),
    )
    holder.drill = drill
    return drill


def _resource(word: str) -> str:
    name = RESOURCES.get(word.lower())
    if name is None:
        raise ConfigError(f"unknown resource {word!r} (known: PostgreSQL, Redis)")
    return name


def _local(outage: ZoneOutage) -> LocalZoneOutage:
    if not isinstance(outage, LocalZoneOutage):
        pytest.fail("this step needs the local zones (network namespaces)")
    return outage


def _zone_drill(holder: DrillHolder) -> ZoneDrill:
    if not isinstance(holder.drill, ZoneDrill):
        pytest.fail("no zone drill was set up by a Given step")
    return holder.drill


@given("PostgreSQL and Redis spread over the availability zones")
def zones_both(holder: DrillHolder, request: pytest.FixtureRequest, zone_outage: ZoneOutage) -> None:
    """PostgreSQL primary/standby and Redis + 3 Sentinels in the profile's zones (AWS: RDS, ElastiCache)."""
    _drill(holder, request, zone_outage, zone_outage.resources(("postgres", "redis")))


@given("Redis spread over the availability zones")
def zones_redis(holder: DrillHolder, request: pytest.FixtureRequest, zone_outage: ZoneOutage) -> None:
    """Redis master, 2 replicas and 3 Sentinels, one per zone; the clients in the profile's client zone."""
    _drill(holder, request, zone_outage, _local(zone_outage).resources(("redis",)))


@given(parsers.parse("the reference application in zone {zone} in front of the stores"))
def reference_app_in_zone(holder: DrillHolder, zone_outage: ZoneOutage, zone: str) -> None:
    """Starts the reference web service inside the zone, over every store; probed from the clients' zone."""
    drill = _zone_drill(holder)
    service = _local(zone_outage).service(zone)
    drill.add_resource(service, behind=service.behind)


@given(parsers.parse("Redis clients in zone {zone} as well"))
def redis_clients_in(holder: DrillHolder, zone: str) -> None:
    """A second Redis canary client connecting from inside the zone (the clients split brain needs)."""
    _zone_drill(holder).add_clients("redis", zone)


@when(parsers.parse("zone {zone} is lost"))
def zone_lost(holder: DrillHolder, zone: str) -> None:
    """Takes every link of the zone down at once (its veth on the fabric bridge)."""
    _zone_drill(holder).lose(zone)


@when("the profile's availability zone loses power through AWS FIS")
def zone_power_lost(holder: DrillHolder) -> None:
    """Starts the profile's FIS experiment (RDS failover, ElastiCache AZ power); stopped on any abort."""
    fis = holder.profile.aws.fis if holder.profile.aws else None
    if fis is None:
        name = holder.profile.name
        raise ConfigError(f"profile '{name}' has no [profiles.{name}.aws.fis] section")
    _zone_drill(holder).lose(fis.availability_zone)


@when(parsers.parse("zone {zone} is partitioned from the other zones for {seconds:g} seconds"))
def zone_partitioned(holder: DrillHolder, zone: str, seconds: float) -> None:
    """Cuts the zone off for N seconds (island bridge) while clients inside it still reach its servers."""
    _zone_drill(holder).partition(zone, seconds)


@when("every resource fails over to another zone")
def fail_over(holder: DrillHolder) -> None:
    """Promotes the PostgreSQL standby, waits for Sentinel, then for every probe's first recovered write."""
    _zone_drill(holder).recover()


@then("every resource reports its own RTO and lost writes")
def per_resource(holder: DrillHolder) -> None:
    """The evidence has one row per resource and client zone, each with an RTO and a read-back loss."""
    record = holder.conclude()
    assert record is not None and record.zones is not None, "no zone evidence was recorded"
    rows = record.zones.resources
    missing = [r.probe for r in rows if r.rto_s is None or r.lost_writes is None]
    assert rows and not missing, f"no RTO or loss for {', '.join(missing) or 'any resource'}: {record.error}"


@then(parsers.re(NO_LOSS_OF.pattern))
def no_loss_of(holder: DrillHolder, resource: str) -> None:
    """No acknowledged write to that resource is missing from its recovered store (read back)."""
    record = holder.conclude()
    assert record is not None and record.zones is not None, "no zone evidence was recorded"
    name = _resource(resource)
    rows = [r for r in record.zones.resources if r.resource == name]
    assert rows, f"no row for {name} in the evidence"
    for row in rows:
        lost = row.lost_seqs[:20]
        assert row.lost_writes == 0, f"{row.probe}: {row.lost_writes} acknowledged writes lost, seq {lost}"


@then("the split-brain writes are reported exactly by sequence number")
def split_brain_exact(holder: DrillHolder) -> None:
    """The loss is exactly the writes the cut-off master acknowledged after the fault, read back by seq."""
    record = holder.conclude()
    assert record is not None and record.zones is not None, "no zone evidence was recorded"
    checks = [c for c in record.checks if c.name.startswith(SPLIT_BRAIN_EXACT)]
    assert checks, f"no write was acknowledged by the cut-off master after the fault: {record.error}"
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
    assert not failed, "; ".join(failed)
