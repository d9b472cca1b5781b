"""Zone faults on the zone fabric (`firedrill.staging.zones`), each timed on the monotonic clock just
before the action is issued and when it returns, and always healed: by `heal()`, by `stop()` (the
drill's teardown, also on failure and Ctrl-C/SIGTERM), and at interpreter exit.

* **Zone lost** (`lose`): every link of the zone goes down in one `ip -batch` call on the fabric side,
  like FIS's AZ power interruption takes an Availability Zone away at once. Packets to and from the
  zone vanish (no reset, no ICMP): clients see timeouts. Processes inside the zone keep running and
  still reach each other, as a powered-off zone's would not; nothing outside reaches them.
* **Zone partitioned** (`partition`): the zone's link, and the links of any zone that stays with it
  (e.g. a client zone), move onto the fabric's island bridge: they reach each other and nothing else,
  and the rest of the zones reach each other and not them. Clients inside the zone itself keep
  reaching its servers too, since that traffic never leaves the namespace. That is split brain's
  setting: a master cut off while clients in its own zone keep writing to it.
* Latency and packet loss between zones: no netem in this kernel (and tbf only limits a rate, it
  adds no delay), so they are made in userspace by `firedrill.faults.shaping.ShapingProxy`, placed
  in the clients' zone in front of a server in another zone.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from enum import StrEnum

from firedrill.errors import ConfigError, HarnessError, StagingError
from firedrill.staging.common import track, untrack
from firedrill.staging.zones import CONTROL, ZoneFabric, ZoneLink


class ZoneFaultKind(StrEnum):
    LOST = "zone-lost"
    PARTITION = "zone-partition"


@dataclass(frozen=True, slots=True)
class ZoneFaultWindow:
    """One zone fault as it happened. The cut took effect between `issued_at` and `returned_at`, and
    was healed between `heal_issued_at` and `healed_at` (monotonic seconds)."""

    kind: ZoneFaultKind
    zone: str
    island: tuple[str, ...]  # every zone cut off from the rest (the zone itself, and who stays with it)
    links: tuple[ZoneLink, ...]
    issued_at: float
    returned_at: float
    heal_issued_at: float | None = None
    healed_at: float | None = None

    @property
    def healed(self) -> bool:
        return self.healed_at is not None

    def describe(self) -> str:
        what = "links down" if self.kind is ZoneFaultKind.LOST else "links moved onto the island bridge"
        cut = ", ".join(f"{link.namespace} {link.veth} ({link.address})" for link in self.links)
        took = (self.returned_at - self.issued_at) * 1000
        return f"{self.kind.value} {self.zone}: {what}: {cut} (applied in {took:.1f} ms)"


class ZoneFaults:
    """Zone faults on one fabric. `with ZoneFaults(fabric) as faults:` heals whatever is on at the end."""

    def __init__(self, fabric: ZoneFabric) -> None:
        self.fabric = fabric
        self.windows: list[ZoneFaultWindow] = []
        track(self)

    @property
    def active(self) -> list[ZoneFaultWindow]:
        return [w for w in self.windows if not w.healed]

    def lose(self, zone: str) -> ZoneFaultWindow:
        """Every link of `zone` down at once; returns once the kernel has taken them down."""
        self._check(zone, ())
        links = (self.fabric.link(zone),)
        issued = time.monotonic()
        self.fabric.set_links([zone], up=False)
        return self._record(ZoneFaultKind.LOST, zone, (zone,), links, issued)

    def partition(self, zone: str, *, with_zones: tuple[str, ...] = ()) -> ZoneFaultWindow:
        """`zone` (and `with_zones`) cut off from every other zone; they still reach each other."""
        self._check(zone, with_zones)
        island = (zone, *with_zones)
        links = tuple(self.fabric.link(z) for z in island)
        issued = time.monotonic()
        self.fabric.isolate(list(island))
        return self._record(ZoneFaultKind.PARTITION, zone, island, links, issued)

    def cut_for(self, zone: str, duration_s: float) -> ZoneFaultWindow:
        """Lose `zone` for `duration_s` (between the cut taking effect and the heal being issued)."""
        if not 0 < duration_s <= 3600:
            raise ConfigError(f"zone cut duration {duration_s} s is outside (0, 3600]")
        window = self.lose(zone)
        time.sleep(max(0.0, window.returned_at + duration_s - time.monotonic()))
        return self.heal()[-1]

    def heal(self) -> list[ZoneFaultWindow]:
        """Undo every active fault (links up, back on the main bridge); returns the healed windows."""
        active = self.active
        if not active:
            return []
        issued = time.monotonic()
        self.fabric.heal()
        healed = time.monotonic()
        done = []
        for window in active:
            i = self.windows.index(window)
            self.windows[i] = replace(window, heal_issued_at=issued, healed_at=healed)
            done.append(self.windows[i])
        return done

    def stop(self) -> None:
        """Heal; never raises (teardown). A fabric that is already gone has nothing left to heal."""
        with contextlib.suppress(HarnessError):
            self.heal()
        untrack(self)

    def __enter__(self) -> ZoneFaults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check(self, zone: str, with_zones: tuple[str, ...]) -> None:
        if self.active:
            raise StagingError(f"a zone fault is already on ({self.active[0].describe()}): heal it first")
        island = {zone, *with_zones}
        for z in island:
            self.fabric.link(z)  # unknown zones fail here, naming the known ones
        rest = [z for z in self.fabric.zones if z not in island and z != CONTROL]
        if not rest:
            raise ConfigError(
                f"cutting off {', '.join(sorted(island))} would leave no zone on the other side"
            )

    def _record(
        self,
        kind: ZoneFaultKind,
        zone: str,
        island: tuple[str, ...],
        links: tuple[ZoneLink, ...],
        issued: float,
    ) -> ZoneFaultWindow:
        window = ZoneFaultWindow(kind, zone, island, links, issued, time.monotonic())
        self.windows.append(window)
        return window
