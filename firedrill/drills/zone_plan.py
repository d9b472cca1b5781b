"""`firedrill plan zone-loss --env local`: every namespace, link and address the zone drill creates, every
link its scenarios cut, and what it deletes, without creating anything.

Names carry the pid of the firedrill process that runs the drill, shown here as `<pid>`. The zones and
what each scenario cuts come from the profile's `[zones]` and the feature file's When-steps.
"""

from __future__ import annotations

import re

from firedrill.catalogue import get_drill
from firedrill.config import Profile
from firedrill.staging.redis_sentinel import NODE_NAMES, SENTINEL_NAMES
from firedrill.staging.zones import CONTROL, ZoneFabric
from firedrill.targets.base import Change

_CUTS = re.compile(r"^\s*(?:When|And)\s+zone (?P<zone>\w+) is (?P<how>lost|partitioned)", re.M)
_CLIENTS = re.compile(r"^\s*(?:Given|And)\s+\w+ clients in zone (?P<zone>\w+) as well", re.M)
_APP = re.compile(r"^\s*(?:Given|And)\s+the reference application in zone (?P<zone>\w+) in front of", re.M)
_PLACEHOLDER = 0  # the pid slot of the names; rendered as <pid>


def _name(text: str) -> str:
    return text.replace(f"-{_PLACEHOLDER}-", "-<pid>-").replace(f"fd{_PLACEHOLDER}", "fd<pid>")


def local_changes(profile: Profile) -> tuple[list[str], list[Change]]:
    """(checks, changes) of the zone drill on the local staging."""
    z = profile.zones
    fabric = ZoneFabric(z.all_zones(), subnet=z.subnet, owner=_PLACEHOLDER)
    fab = _name(fabric.fabric_namespace)
    checks = [
        "nothing is created in, routed to or changed in the machine's own network namespace",
        f"only addresses in {fabric.network} are used, and only inside namespaces firedrill creates",
    ]
    changes = [
        Change(
            "local",
            "netns add",
            fab,
            f"bridges {_name(fabric.bridge)} and {_name(fabric.island)} (an island)",
        ),
    ]
    for link in fabric.links():
        role = "control zone, never cut" if link.zone == CONTROL else f"zone {link.zone}"
        changes.append(
            Change(
                "local",
                "netns add + veth",
                _name(link.namespace),
                f"{role}: {_name(link.peer)} {link.address}/{fabric.network.prefixlen} <-> "
                f"{_name(link.veth)} on {_name(fabric.bridge)} in {fab}",
            )
        )
    placed = {"pg-a": z.postgres[0], "pg-b": z.postgres[1]}
    placed |= dict(zip((*NODE_NAMES, *SENTINEL_NAMES), (*z.redis, *z.sentinels), strict=True))
    for server, zone in placed.items():
        changes.append(
            Change(
                "local", "start", server, f"inside {_name(fabric.namespace(zone))}, on {fabric.address(zone)}"
            )
        )
    feature = get_drill("zone-loss").feature.read_text(encoding="utf-8")
    for zone in dict.fromkeys(m["zone"] for m in _APP.finditer(feature)):
        changes.append(
            Change(
                "local",
                "start",
                "reference-app",
                f"examples/reference_app inside {_name(fabric.namespace(zone))}, on {fabric.address(zone)} "
                "(a free port), in front of every PostgreSQL node and Sentinel; stopped before the stores",
            )
        )
    for zone in dict.fromkeys([z.clients, *(m["zone"] for m in _CLIENTS.finditer(feature))]):
        where = _name(fabric.namespace(zone))
        changes.append(
            Change("local", "probes", f"clients in zone {zone}", f"setns into {where} on their threads")
        )
    for cut in dict.fromkeys((m["zone"], m["how"]) for m in _CUTS.finditer(feature)):
        zone, how = cut
        link = fabric.link(zone)
        action = f"ip -n {fab} link set {_name(link.veth)} " + (
            "down" if how == "lost" else f"master {_name(fabric.island)}"
        )
        changes.append(
            Change(
                "local",
                f"cut (zone {how})",
                f"{_name(link.namespace)} {_name(link.veth)} {link.address}",
                action,
            )
        )
    changes.append(
        Change(
            "local", "heal", "every cut link", f"up and back on {_name(fabric.bridge)}, after each scenario"
        )
    )
    changes.append(
        Change(
            "local",
            "netns del",
            "every namespace above",
            "bridges and veth pairs go with them; also on failure, "
            "Ctrl-C and SIGTERM; `firedrill staging down` sweeps a killed run's",
        )
    )
    return checks, changes
