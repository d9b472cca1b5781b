"""Patroni's REST API, typed: `/cluster` (members, roles, timelines), `/patroni` (one node's own view,
answered from its local PostgreSQL even when the DCS is down), `/config`, `POST /switchover`,
`POST /failover`, `POST /restart`.

Used by the local HA staging and by the adapters for local and existing clusters alike. Every call
has a short timeout and fails as one `RestError` line naming the URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from firedrill.staging.rest import Reply, RestError, call, get_json

PRIMARY_ROLES = frozenset({"primary", "master", "leader", "standby_leader"})


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    role: str  # /cluster: leader | sync_standby | replica | ...
    state: str  # running | streaming | stopped | starting | ...
    host: str
    port: int
    api_url: str
    timeline: int | None
    lag: int | None  # bytes behind the leader (None when unknown)
    tags: dict[str, str]

    @property
    def is_leader(self) -> bool:
        return self.role in ("leader", "standby_leader")


@dataclass(frozen=True, slots=True)
class ClusterView:
    scope: str | None
    members: tuple[Member, ...]

    @property
    def leader(self) -> Member | None:
        return next((m for m in self.members if m.is_leader), None)

    def replicas(self) -> list[Member]:
        return [m for m in self.members if not m.is_leader]

    def switchover_candidate(self) -> Member | None:
        """Whom a switchover hands the leader key to: the synchronous standby if it streams, else the
        first streaming replica; None when no replica streams."""
        streaming = [m for m in self.replicas() if m.state == "streaming"]
        return next((m for m in streaming if m.role == "sync_standby"), streaming[0] if streaming else None)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A node's own answer on GET /patroni."""

    name: str
    role: str  # primary | replica | ...
    state: str  # running | stopped | starting | ...
    timeline: int | None
    scope: str | None
    http_status: int
    version: str | None = None  # Patroni's own version

    @property
    def is_primary(self) -> bool:
        return self.role in PRIMARY_ROLES and self.state == "running"


# The failover knobs of GET /config that evidence records, with Patroni's default for each: a cluster
# answers only what was set explicitly.
FAILOVER_SETTINGS: tuple[tuple[str, object], ...] = (
    ("ttl", 30),
    ("loop_wait", 10),
    ("retry_timeout", 10),
    ("maximum_lag_on_failover", 1048576),
    ("synchronous_mode", False),
    ("failsafe_mode", False),
)


def failover_settings(config: Mapping[str, object]) -> dict[str, str]:
    """The failover knobs of a /config answer as strings (booleans lower-case, as in Patroni's YAML)."""
    return {
        key: str(config.get(key, default)).lower()
        if isinstance(default, bool)
        else str(config.get(key, default))
        for key, default in FAILOVER_SETTINGS
    }


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_cluster(body: Any) -> ClusterView:
    if not isinstance(body, dict) or not isinstance(body.get("members"), list):
        raise RestError("Patroni /cluster answered without a members list")
    members = []
    for m in body["members"]:
        if not isinstance(m, dict):
            continue
        lag = m.get("lag")
        members.append(
            Member(
                name=str(m.get("name", "?")),
                role=str(m.get("role", "?")),
                state=str(m.get("state", "?")),
                host=str(m.get("host", "")),
                port=_int(m.get("port")) or 0,
                api_url=str(m.get("api_url", "")),
                timeline=_int(m.get("timeline")),
                lag=lag if isinstance(lag, int) else None,
                tags={str(k): str(v) for k, v in (m.get("tags") or {}).items()},
            )
        )
    scope = body.get("scope")
    return ClusterView(scope=str(scope) if scope is not None else None, members=tuple(members))


def parse_status(body: Any, http_status: int, fallback_name: str) -> NodeStatus:
    if not isinstance(body, dict):
        raise RestError(f"Patroni /patroni of {fallback_name} answered without JSON")
    patroni = body.get("patroni") if isinstance(body.get("patroni"), dict) else {}
    assert isinstance(patroni, dict)
    return NodeStatus(
        name=str(patroni.get("name") or fallback_name),
        role=str(body.get("role", "?")),
        state=str(body.get("state", "?")),
        timeline=_int(body.get("timeline")),
        scope=str(patroni["scope"]) if patroni.get("scope") is not None else None,
        http_status=http_status,
        version=str(patroni["version"]) if patroni.get("version") is not None else None,
    )


@dataclass(frozen=True, slots=True)
class PatroniApi:
    """One node's REST API, e.g. `http://127.0.0.1:8008`."""

    url: str
    name: str = ""
    timeout_s: float = 1.0

    def cluster(self) -> ClusterView:
        return parse_cluster(get_json(f"{self.url}/cluster", timeout_s=self.timeout_s))

    def status(self) -> NodeStatus:
        # /patroni answers 503 with the same JSON while PostgreSQL is not running: still a status.
        reply = call("GET", f"{self.url}/patroni", timeout_s=self.timeout_s)
        return parse_status(reply.body, reply.status, self.name or self.url)

    def config(self) -> dict[str, Any]:
        body = get_json(f"{self.url}/config", timeout_s=self.timeout_s)
        if not isinstance(body, dict):
            raise RestError(f"GET {self.url}/config: not a JSON object")
        return body

    def is_primary(self) -> bool:
        return call("GET", f"{self.url}/primary", timeout_s=self.timeout_s).status == 200

    def switchover(self, leader: str, candidate: str | None, *, timeout_s: float = 60.0) -> Reply:
        body: dict[str, str] = {"leader": leader}
        if candidate:
            body["candidate"] = candidate
        return call("POST", f"{self.url}/switchover", body, timeout_s=timeout_s)

    def failover(self, candidate: str, *, timeout_s: float = 60.0) -> Reply:
        return call("POST", f"{self.url}/failover", {"candidate": candidate}, timeout_s=timeout_s)

    def restart(self, *, timeout_s: float = 60.0) -> Reply:
        return call("POST", f"{self.url}/restart", {}, timeout_s=timeout_s)
