"""FailoverTarget over an Amazon ElastiCache for Redis replication group (cluster mode disabled).

Control plane: `test_failover(ReplicationGroupId, NodeGroupId)`, then status polls and
`describe_events` until the group is available with another primary, with a deadline and a log line
per change. The primary node must visibly change, or the drill fails saying so.

Data plane: canary writes through the node group's primary endpoint (DNS follows the primary) with
redis-py, bounded socket and connect timeouts and no client-side retries (a retry could land a write
on another node than the one recorded). Each write records the node that served it (`CLIENT INFO`
laddr, the server's own address), so RTO and lost writes are measured as for every other target.
Canary key, error classes and read-back are the local Redis target's (`firedrill.targets.redis_canary`).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from firedrill.aws.errors import aws_call
from firedrill.aws.guardrails import Identity, check_account, check_tags, tag_dict
from firedrill.aws.session import (
    AwsSession,
    EventLog,
    aws_settings,
    parse_endpoint,
    wait_for,
    wait_steady,
)
from firedrill.config import ElastiCacheSettings, Profile
from firedrill.errors import (
    ConfigError,
    ProbeFailure,
    SteadyStateNotMet,
    TargetError,
)
from firedrill.evidence import Node
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.targets.aws_lease import TagLease, cache_lease
from firedrill.targets.base import Change, FaultKind, FaultSpec, TargetDescription
from firedrill.targets.redis_canary import (
    CANARY_PREFIX,
    canary_key,
    drop_canary,
    probe_error_class,
    read_back,
)

if TYPE_CHECKING:
    from mypy_boto3_elasticache.type_defs import NodeGroupTypeDef, ReplicationGroupTypeDef

log = logging.getLogger(__name__)

CANARY_TTL_S = 7 * 86400  # canary hashes expire by themselves in the staging cache
FAILOVER_DONE = re.compile(r"(failover.*complet|complet.*failover)", re.IGNORECASE)


# ---- data plane ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RedisEndpoint:
    host: str
    port: int
    tls: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self, timeout_s: float) -> redis.Redis:
        return redis.Redis(
            host=self.host,
            port=self.port,
            ssl=self.tls,
            username=self.username,
            password=self.password,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=True,
            decode_responses=True,
            client_name="firedrill",
        )


def served_by(client: redis.Redis, fallback: str) -> str:
    """The server's own address for this connection (`CLIENT INFO` laddr), behind any DNS name."""
    try:
        info = client.client_info()
    except redis.ResponseError:  # CLIENT INFO refused: the endpoint is the best we know
        return fallback
    laddr = info.get("laddr") if isinstance(info, dict) else None
    return str(laddr) if laddr else fallback


class RedisCanarySession:
    """One probe connection; connects lazily on the probe's worker thread."""

    def __init__(self, endpoint: RedisEndpoint, run_id: str, probe: ProbeConfig) -> None:
        self._endpoint = endpoint
        self._key = canary_key(run_id)
        self._timeout = probe.op_timeout_s
        self._client: redis.Redis | None = None
        self._node = endpoint.address

    def write(self, seq: int) -> str:
        try:
            if self._client is None:
                client = self._endpoint.client(self._timeout)
                self._node = served_by(client, self._endpoint.address)
                self._client = client
            self._client.zadd(self._key, {str(seq): seq})
        except redis.RedisError as exc:
            raise ProbeFailure(probe_error_class(exc)) from exc
        return self._node

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


# ---- control plane -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CacheView:
    status: str
    node_group_status: str
    primary: str  # cache cluster id of the primary node
    primary_az: str | None
    replicas: tuple[tuple[str, str | None], ...]  # (cache cluster id, AZ)
    automatic_failover: str
    multi_az: str
    endpoint: tuple[str, int] | None
    engine_version: str
    node_type: str

    def line(self) -> str:
        return f"status={self.status} primary={self.primary} az={self.primary_az or '?'}"


class ElastiCacheFailoverTarget:
    """Implements firedrill.targets.base.FailoverTarget."""

    def __init__(
        self,
        session: AwsSession,
        settings: ElastiCacheSettings,
        endpoint: RedisEndpoint,
        *,
        identity: Identity,
        guard: str,
    ) -> None:
        self._session = session
        self._settings = settings
        self._endpoint = endpoint
        self.identity = identity
        self.guardrail = guard
        self.label = f"ElastiCache replication group {settings.replication_group_id}"
        self._before: CacheView | None = None
        self._events: EventLog | None = None
        self._moved: str | None = None

    # ---- observation ---------------------------------------------------------------------------
    def _group(self) -> ReplicationGroupTypeDef:
        rg = self._settings.replication_group_id
        with aws_call("elasticache:DescribeReplicationGroups", rg):
            groups = self._session.elasticache().describe_replication_groups(ReplicationGroupId=rg)
        if not groups["ReplicationGroups"]:
            raise TargetError(f"{self.label} not found", code="ReplicationGroupNotFoundFault")
        return groups["ReplicationGroups"][0]

    def _node_group(self, group: ReplicationGroupTypeDef) -> NodeGroupTypeDef:
        wanted = self._settings.node_group_id
        for ng in group.get("NodeGroups", []):
            if ng.get("NodeGroupId") == wanted:
                return ng
        known = ", ".join(ng.get("NodeGroupId", "?") for ng in group.get("NodeGroups", []))
        raise ConfigError(f"{self.label} has no node group {wanted} (it has: {known or 'none'})")

    def observe(self) -> CacheView:
        group = self._group()
        ng = self._node_group(group)
        members = ng.get("NodeGroupMembers", [])
        primary = next((m for m in members if m.get("CurrentRole") == "primary"), None)
        ep = ng.get("PrimaryEndpoint", {})
        return CacheView(
            status=group.get("Status", "?"),
            node_group_status=ng.get("Status", "?"),
            primary=primary.get("CacheClusterId", "?") if primary else "?",
            primary_az=primary.get("PreferredAvailabilityZone") if primary else None,
            replicas=tuple(
                (m.get("CacheClusterId", "?"), m.get("PreferredAvailabilityZone"))
                for m in members
                if m.get("CurrentRole") == "replica"
            ),
            automatic_failover=group.get("AutomaticFailover", "?"),
            multi_az=group.get("MultiAZ", "?"),
            endpoint=(ep["Address"], ep.get("Port", 6379)) if "Address" in ep else None,
            engine_version=group.get("Engine", "redis"),
            node_type=group.get("CacheNodeType", ""),
        )

    def _steady_problem(self, view: CacheView) -> str | None:
        if view.status != "available" or view.node_group_status != "available":
            return f"{self.label} is {view.status} (node group {view.node_group_status}), not available"
        if view.automatic_failover != "enabled":
            return (
                f"{self.label} has automatic failover {view.automatic_failover}: no replica would take over"
            )
        if not view.replicas:
            return f"{self.label} node group {self._settings.node_group_id} has no replica"
        return None

    # ---- description ---------------------------------------------------------------------------
    def describe(self) -> TargetDescription:
        view = self.observe()
        version = self._server_version()
        nodes = [
            Node(name=view.primary, role="primary", address=f"{self._endpoint.address} ({view.primary_az})")
        ]
        nodes += [Node(name=cid, role="replica", address=az or "?") for cid, az in view.replicas]
        token = self._settings.auth_token.reference() if self._settings.auth_token else "none"
        return TargetDescription(
            kind="redis",
            environment_kind="aws",
            servers={"redis": version, "service": "Amazon ElastiCache"},
            nodes=tuple(Node(name=n.name, role=n.role, address=n.address, version=version) for n in nodes),
            settings={
                "resource": self.label,
                "node_group": self._settings.node_group_id,
                "region": self._session.settings.region,
                "account": self.identity.account,
                "caller": self.identity.arn,
                "node_type": view.node_type,
                "automatic_failover": view.automatic_failover,
                "multi_az": view.multi_az,
                "endpoint": self._endpoint.address,
                "tls": str(self._endpoint.tls).lower(),
                "auth_token": token,  # the reference only
                "guardrail": self.guardrail,
            },
        )

    def _server_version(self) -> str:
        try:
            with contextlib.closing(self._endpoint.client(5.0)) as client:
                return str(client.info("server").get("redis_version", "?"))
        except redis.RedisError:
            return "?"

    def supported_faults(self) -> frozenset[FaultKind]:
        return frozenset({FaultKind.TEST_FAILOVER})

    def promotion_is_manual(self) -> bool:
        return False

    def endpoint(self) -> RedisEndpoint:
        return self._endpoint

    def drill_lease(self) -> TagLease:
        """One drill per replication group at a time: a `firedrill:lease` tag on the group."""
        return cache_lease(self._session, self._settings.replication_group_id, self.label)

    # ---- drill steps ---------------------------------------------------------------------------
    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        view = wait_steady(
            self.label,
            self.observe,
            self._steady_problem,
            delay_s=self._session.settings.poll_delay_s,
            timeout_s=timeout_s,
            logger=log,
        )
        replication = self._replication(max_lag_s)
        return {
            "status": view.status,
            "primary": view.primary,
            "primary_az": view.primary_az or "?",
            "replicas": ", ".join(f"{cid}@{az or '?'}" for cid, az in view.replicas),
            **replication,
        }

    def _replication(self, max_lag_s: float) -> dict[str, str]:
        """The primary's own view: role master, every replica online and within the lag bound."""
        try:
            with contextlib.closing(self._endpoint.client(5.0)) as client:
                info = client.info("replication")
        except redis.RedisError as exc:
            raise TargetError(
                f"cannot query {self._endpoint.address}: {exc}", code=probe_error_class(exc)
            ) from exc
        if info.get("role") != "master":
            raise SteadyStateNotMet(f"{self._endpoint.address} answers as {info.get('role')}, not master")
        links = [v for k, v in info.items() if re.fullmatch(r"slave\d+", str(k)) and isinstance(v, dict)]
        if not links:
            raise SteadyStateNotMet(f"{self._endpoint.address} has no connected replica")
        bad = [
            f"{r.get('ip')}:{r.get('port')} {r.get('state')} lag={r.get('lag')}"
            for r in links
            if r.get("state") != "online" or float(r.get("lag", 0)) > max_lag_s
        ]
        if bad:
            raise SteadyStateNotMet(f"replicas not in sync (lag bound {max_lag_s:g} s): {'; '.join(bad)}")
        return {
            "connected_replicas": str(len(links)),
            "replica_lag_s": ", ".join(str(r.get("lag", "?")) for r in links),
        }

    def prepare_canary(self, run_id: str) -> None:
        """The run's canary set starts empty (and the primary proves writable)."""
        with contextlib.closing(self._endpoint.client(5.0)) as client:
            drop_canary(client, run_id)

    def session_factory(self, run_id: str, probe: ProbeConfig) -> SessionFactory:
        endpoint = self._endpoint
        return lambda: RedisCanarySession(endpoint, run_id, probe)

    def inject(self, fault: FaultSpec) -> str:
        if fault.kind is not FaultKind.TEST_FAILOVER:
            raise ConfigError(f"fault '{fault.kind}' is not supported by {self.label}")
        before = self.observe()
        problem = self._steady_problem(before)
        if problem:
            raise SteadyStateNotMet(f"{problem}; no failover issued")
        self._before = before
        self._events = EventLog(self.label, self._fetch_events, datetime.now(UTC), logger=log)
        rg, ng = self._settings.replication_group_id, self._settings.node_group_id
        with aws_call("elasticache:TestFailover", f"{rg}/{ng}"):
            self._session.elasticache().test_failover(ReplicationGroupId=rg, NodeGroupId=ng)
        return (
            f"test_failover on {rg} node group {ng} (primary {before.primary} in {before.primary_az or '?'})"
        )

    def _fetch_events(self, since: datetime) -> list[tuple[datetime, str]]:
        rg = self._settings.replication_group_id
        with aws_call("elasticache:DescribeEvents", rg):
            events = self._session.elasticache().describe_events(
                SourceIdentifier=rg, SourceType="replication-group", StartTime=since
            )["Events"]
        return [(e["Date"], e.get("Message", "")) for e in events if "Date" in e]

    def clear(self, fault: FaultSpec) -> str:
        return "nothing to clear"

    def promote(self, *, timeout_s: float) -> str:
        """Wait for ElastiCache to finish the failover (its deadline, `failover_timeout_s`, when longer)."""
        before, events = self._before, self._events
        if before is None or events is None:
            raise TargetError("no failover was issued, so there is nothing to wait for")
        seen_busy = False

        def poll() -> tuple[bool, str]:
            nonlocal seen_busy
            view = self.observe()
            events.poll()
            seen_busy = seen_busy or view.status != "available"
            done = view.status == "available" and (
                view.primary != before.primary or seen_busy or events.matches(FAILOVER_DONE)
            )
            return done, view.line()

        policy = self._session.policy(max(timeout_s, self._session.settings.failover_timeout_s))
        _, waited = wait_for(f"{self.label} failover", poll, policy, logger=log)
        now = self.observe()
        if now.primary == before.primary:
            raise TargetError(
                f"{self.label} reports the failover done after {waited:.1f} s but the primary is still "
                f"{now.primary}: it did not move",
                code="FailoverNotObserved",
            )
        was, now_at = (
            f"{before.primary} ({before.primary_az or '?'})",
            f"{now.primary} ({now.primary_az or '?'})",
        )
        self._moved = f"primary {was} -> {now_at}"
        return f"{self.label}: {self._moved} after {waited:.1f} s; events: {events.summary()}"

    def recovered_nodes(self, fault: FaultSpec) -> frozenset[str] | None:
        return None  # the primary endpoint's DNS name follows the primary

    def read_back(self, run_id: str) -> frozenset[int]:
        with contextlib.closing(self._endpoint.client(10.0)) as client:
            present = read_back(client, run_id)
            with contextlib.suppress(redis.RedisError):
                client.expire(canary_key(run_id), CANARY_TTL_S)
        return present

    def restore_topology(self, *, timeout_s: float) -> str:
        """ElastiCache re-attaches the old primary as a replica itself: wait until it says so."""

        def poll() -> tuple[bool, str]:
            view = self.observe()
            problem = self._steady_problem(view)
            return problem is None, problem or view.line()

        wait_for(f"{self.label} redundancy", poll, self._session.policy(timeout_s), logger=log)
        view = self.observe()
        replicas = ", ".join(f"{cid}@{az or '?'}" for cid, az in view.replicas)
        verified = f"; failover verified: {self._moved}" if self._moved else ""
        self._before = self._events = None
        return f"{self.label} available: primary {view.primary}, replicas {replicas}{verified}"

    def plan_checks(self) -> list[str]:
        """Nothing beyond the guardrails: the replication group is read when planning."""
        return []

    def plan(self, *, rate_hz: float) -> list[Change]:
        """What a cache failover drill would change here (for `firedrill plan`); reads state only."""
        view = self.observe()
        rg, ng = self._settings.replication_group_id, self._settings.node_group_id
        replicas = ", ".join(f"{cid} ({az or '?'})" for cid, az in view.replicas) or "none"
        s = self._session.settings
        return [
            Change(
                "data",
                "ZADD",
                CANARY_PREFIX + "<run id>",
                f"~{rate_hz:g} members/s through {self._endpoint.address}; the key expires after 7 days",
            ),
            Change(
                "aws",
                "elasticache:TestFailover",
                f"{rg} node group {ng}",
                f"primary {view.primary} ({view.primary_az or '?'}) -> one of {replicas}; writes fail until "
                "the DNS name follows (typically tens of seconds); AWS limits test failovers per day",
            ),
            Change(
                "wait",
                "poll DescribeReplicationGroups/DescribeEvents",
                rg,
                f"until the primary moved, at most {s.failover_timeout_s:g} s, every {s.poll_delay_s:g} s",
            ),
        ]

    def close(self) -> None:
        """Nothing to release: boto3 clients and probe connections close themselves."""


def connect_elasticache(session: AwsSession, *, resolve_secrets: bool = True) -> ElastiCacheFailoverTarget:
    """Guardrails first (account, then tags), then the adapter. Read-only until a drill injects.
    `resolve_secrets=False` (plans) leaves the auth token unread."""
    settings = session.settings.elasticache
    if settings is None:
        raise ConfigError("the profile's aws section has no [elasticache] part")
    identity = check_account(session)
    label = f"ElastiCache replication group {settings.replication_group_id}"
    rg = settings.replication_group_id
    with aws_call("elasticache:DescribeReplicationGroups", rg):
        groups = session.elasticache().describe_replication_groups(ReplicationGroupId=rg)["ReplicationGroups"]
    if not groups:
        raise TargetError(f"{label} not found", code="ReplicationGroupNotFoundFault")
    group = groups[0]
    if group.get("ClusterEnabled"):
        raise ConfigError(f"{label} runs in cluster mode: only cluster-mode-disabled groups are supported")
    with aws_call("elasticache:ListTagsForResource", rg):
        tags = session.elasticache().list_tags_for_resource(ResourceName=group.get("ARN", rg))["TagList"]
    guard = check_tags(session.settings, label, tag_dict(tags))
    ng = next(
        (n for n in group.get("NodeGroups", []) if n.get("NodeGroupId") == settings.node_group_id), None
    )
    if settings.endpoint:
        host, port = parse_endpoint(settings.endpoint, 6379)
    elif ng is not None and "Address" in ng.get("PrimaryEndpoint", {}):
        host, port = ng["PrimaryEndpoint"]["Address"], ng["PrimaryEndpoint"].get("Port", 6379)
    else:
        raise ConfigError(f"{label} has no primary endpoint for node group {settings.node_group_id}")
    password = None
    if settings.auth_token is not None and resolve_secrets:
        password = session.resolve_secret(settings.auth_token, f"{label} auth token")
    endpoint = RedisEndpoint(
        host=host, port=port, tls=settings.tls, username=settings.username, password=password
    )
    log.info("%s in account %s (%s), endpoint %s", label, identity.account, guard, endpoint.address)
    return ElastiCacheFailoverTarget(session, settings, endpoint, identity=identity, guard=guard)


@contextmanager
def open_elasticache_target(
    profile: Profile, session: AwsSession | None = None
) -> Iterator[ElastiCacheFailoverTarget]:
    target = connect_elasticache(session or AwsSession(aws_settings(profile)))
    try:
        yield target
    finally:
        target.close()


def plan_target(session: AwsSession) -> ElastiCacheFailoverTarget:
    """The failover target opened for `firedrill plan`: guardrails run, no secret is read."""
    return connect_elasticache(session, resolve_secrets=False)
