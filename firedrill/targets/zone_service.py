"""The reference application as one more resource of a zone drill (`ZoneResource`): a web service
running inside a zone of its own choosing, in front of every store of the drill, probed over HTTP.

The application (`examples/reference_app`) runs in its zone's namespace on the zone's address and
reaches the stores on their zone addresses: PostgreSQL through a psycopg_pool pool over a multi-host
conninfo listing both nodes, Redis through a Sentinel client knowing the Sentinels of every zone. Its
probe writes `store=all` records: a request is acknowledged only once every store took it, as a service
that needs both does, so the service cannot be back before the slower of its stores (`behind`).

Nothing is promoted for it: after a zone is lost, the application finds the new primaries itself (its
pool reconnects, its Sentinel client asks the Sentinels), which is the part of the outage a service adds.
Any node behind it counts as recovered (`recovered_nodes()` is None). Control calls (health, read-back)
run in the control zone.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from firedrill.errors import SteadyStateNotMet, TargetError
from firedrill.evidence import Node
from firedrill.load import http as service_http
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.staging.reference_app import ReferenceApp
from firedrill.targets.base import TargetDescription
from firedrill.targets.zone_stores import ZoneHost

STORE = "all"  # the probe's records go to every store the application has


class ZoneService:
    name = "service"

    def __init__(
        self, app: ReferenceApp, zones: ZoneHost, *, zone: str, behind: tuple[str, ...], client: str
    ) -> None:
        self.app = app
        self.zone = zone
        self.behind = behind  # the resources the service writes to, in the drill's names
        self.client = client  # how the application connects to them, for the evidence
        self._zones = zones

    @property
    def address(self) -> str:
        return urlsplit(self.app.url).netloc

    def describe(self) -> TargetDescription:
        return TargetDescription(
            kind="service",
            environment_kind="local-staging",
            servers={"reference application": "examples/reference_app (stdlib HTTP, psycopg_pool, redis-py)"},
            nodes=(Node(name="reference-app", role="service", address=self.address),),
            settings={
                "service.url": self.app.url,
                "service.zone": self.zone,
                "service.behind": "+".join(self.behind),
                "service.client": self.client,
            },
        )

    def placements(self) -> list[tuple[str, str, str]]:
        return [("reference-app", self.zone, self.address.rsplit(":", 1)[0])]

    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        with self._zones.control():
            try:
                response = httpx.get(f"{self.app.url}/healthz", timeout=max(1.0, min(timeout_s, 5.0)))
            except httpx.HTTPError as exc:
                raise SteadyStateNotMet(
                    f"the reference application at {self.app.url} does not answer: "
                    f"{service_http.transport_error(exc)}"
                ) from exc
        if response.status_code != 200:
            raise SteadyStateNotMet(f"{self.app.url}/healthz answered {response.status_code}")
        return {"url": self.app.url, "zone": self.zone, "behind": "+".join(self.behind), "healthz": "ok"}

    def prepare_canary(self, key: str) -> None:
        return None  # the application creates its own table

    def session_factory(self, key: str, probe: ProbeConfig) -> SessionFactory:
        url, timeout = self.app.url, probe.op_timeout_s
        return lambda: service_http.HttpServiceSession(url, key, timeout, STORE)

    def before_fault(self) -> str:
        return f"reference application in zone {self.zone} at {self.app.url}, behind {', '.join(self.behind)}"

    def fence(self, cut_zones: frozenset[str]) -> str:
        if self.zone in cut_zones:
            return f"the application's zone {self.zone} is cut off"
        return f"the application in zone {self.zone} stays up: it must find the stores' new primaries itself"

    def promotion_is_manual(self) -> bool:
        return False

    def promote(self, *, timeout_s: float) -> str:
        return "nothing to promote: the application reconnects on its own (pool, Sentinel client)"

    def recovered_nodes(self) -> frozenset[str] | None:
        return None

    def read_back(self, key: str) -> frozenset[int]:
        """Through the application, from every store (a record counts only when all of them hold it)."""
        if self.app.pid is None:
            raise TargetError("the reference application is not running: nothing to read back through")
        with self._zones.control():
            return service_http.read_back(self.app.url, key, store=STORE)

    def restore_topology(self, *, timeout_s: float) -> str:
        return "service: nothing to restore (the application follows the stores)"
