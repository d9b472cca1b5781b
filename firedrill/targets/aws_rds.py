"""FailoverTarget over Amazon RDS for PostgreSQL: a Multi-AZ DB instance or an Aurora cluster.

Control plane (boto3): a forced failover (`reboot_db_instance(ForceFailover=True)` for a Multi-AZ
instance, `failover_db_cluster` for Aurora), followed by status polls and `describe_events` until the
platform says it is done, with a deadline and a log line per change. The failover must be visible:
the writer's availability zone (Multi-AZ) or the writer instance (Aurora) has to change, or the drill
fails with a line saying it did not.

Data plane: the same canary probes as the local staging (`PgCanarySession` over a `PgEndpoint`) through
the endpoint's DNS name, so RTO/RPO are measured from the client's side exactly the same way.
Guardrails (account, non-production tags) run in `open_rds_target` before anything else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

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
from firedrill.config import Profile, RdsSettings
from firedrill.errors import ConfigError, SteadyStateNotMet, TargetError
from firedrill.evidence import Node
from firedrill.probes import ProbeConfig, SessionFactory
from firedrill.targets import pg_canary
from firedrill.targets.aws_lease import TagLease, rds_lease
from firedrill.targets.base import Change, FaultKind, FaultSpec, TargetDescription
from firedrill.targets.pg_canary import PgCanarySession, PgEndpoint

if TYPE_CHECKING:
    from mypy_boto3_rds.literals import SourceTypeType
    from mypy_boto3_rds.type_defs import DBClusterTypeDef, DBInstanceTypeDef

log = logging.getLogger(__name__)

FAILOVER_DONE = re.compile(r"(failover.*complet|complet.*failover)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Member:
    instance_id: str
    az: str | None
    status: str
    writer: bool


@dataclass(frozen=True, slots=True)
class RdsView:
    """One observation of the database's control-plane state."""

    status: str
    writer: str  # the instance id accepting writes
    az: str | None  # the writer's availability zone
    standby_az: str | None  # Multi-AZ: the standby's zone
    multi_az: bool
    members: tuple[Member, ...]
    engine_version: str
    instance_class: str
    endpoint: tuple[str, int] | None

    def line(self) -> str:
        return f"status={self.status} writer={self.writer} az={self.az or '?'}"


class _Database(Protocol):
    label: str
    source_type: SourceTypeType
    source_id: str

    def observe(self) -> RdsView: ...

    def guard(self) -> str: ...

    def steady_problem(self, view: RdsView) -> str | None: ...

    def fail_over(self, view: RdsView) -> str: ...

    def moved(self, before: RdsView, now: RdsView) -> tuple[bool, str]:
        """Did the failover visibly move the writer? And a line saying where it went."""
        ...


def _instance_members(rows: Sequence[DBInstanceTypeDef], writer: str) -> tuple[Member, ...]:
    return tuple(
        Member(
            instance_id=r.get("DBInstanceIdentifier", "?"),
            az=r.get("AvailabilityZone"),
            status=r.get("DBInstanceStatus", "?"),
            writer=r.get("DBInstanceIdentifier") == writer,
        )
        for r in rows
    )


class MultiAzInstance:
    source_type: SourceTypeType = "db-instance"

    def __init__(self, session: AwsSession, instance_id: str) -> None:
        self._session = session
        self.source_id = instance_id
        self.label = f"RDS DB instance {instance_id}"

    def _describe(self) -> DBInstanceTypeDef:
        with aws_call("rds:DescribeDBInstances", self.source_id):
            rows = self._session.rds().describe_db_instances(DBInstanceIdentifier=self.source_id)[
                "DBInstances"
            ]
        if not rows:
            raise TargetError(f"{self.label} not found", code="DBInstanceNotFound")
        return rows[0]

    def observe(self) -> RdsView:
        row = self._describe()
        ep = row.get("Endpoint", {})
        return RdsView(
            status=row.get("DBInstanceStatus", "?"),
            writer=self.source_id,
            az=row.get("AvailabilityZone"),
            standby_az=row.get("SecondaryAvailabilityZone"),
            multi_az=bool(row.get("MultiAZ")),
            members=_instance_members([row], self.source_id),
            engine_version=row.get("EngineVersion", ""),
            instance_class=row.get("DBInstanceClass", ""),
            endpoint=(ep["Address"], ep.get("Port", 5432)) if "Address" in ep else None,
        )

    def guard(self) -> str:
        row = self._describe()
        return check_tags(self._session.settings, self.label, tag_dict(row.get("TagList")))

    def steady_problem(self, view: RdsView) -> str | None:
        if view.status != "available":
            return f"{self.label} is {view.status}, not available"
        if not view.multi_az:
            return f"{self.label} is not Multi-AZ: there is no standby to fail over to"
        return None

    def fail_over(self, view: RdsView) -> str:
        with aws_call("rds:RebootDBInstance", self.source_id):
            self._session.rds().reboot_db_instance(DBInstanceIdentifier=self.source_id, ForceFailover=True)
        return f"reboot_db_instance(ForceFailover=True) on {self.source_id} (writer in {view.az or '?'})"

    def moved(self, before: RdsView, now: RdsView) -> tuple[bool, str]:
        if before.az and now.az and before.az != now.az:
            return True, f"writer AZ {before.az} -> {now.az}"
        return False, f"writer AZ still {now.az or '?'} (was {before.az or '?'})"


class AuroraCluster:
    source_type: SourceTypeType = "db-cluster"

    def __init__(self, session: AwsSession, cluster_id: str) -> None:
        self._session = session
        self.source_id = cluster_id
        self.label = f"Aurora cluster {cluster_id}"

    def _rows(self) -> tuple[DBClusterTypeDef, list[DBInstanceTypeDef]]:
        rds = self._session.rds()
        with aws_call("rds:DescribeDBClusters", self.source_id):
            clusters = rds.describe_db_clusters(DBClusterIdentifier=self.source_id)["DBClusters"]
        if not clusters:
            raise TargetError(f"{self.label} not found", code="DBClusterNotFoundFault")
        with aws_call("rds:DescribeDBInstances", self.source_id):
            members = rds.describe_db_instances(
                Filters=[{"Name": "db-cluster-id", "Values": [self.source_id]}]
            )["DBInstances"]
        return clusters[0], members

    def observe(self) -> RdsView:
        cluster, rows = self._rows()
        writer = next(
            (
                m.get("DBInstanceIdentifier", "?")
                for m in cluster.get("DBClusterMembers", [])
                if m.get("IsClusterWriter")
            ),
            "?",
        )
        members = _instance_members(rows, writer)
        writer_az = next((m.az for m in members if m.writer), None)
        host, port = cluster.get("Endpoint"), cluster.get("Port")
        return RdsView(
            status=cluster.get("Status", "?"),
            writer=writer,
            az=writer_az,
            standby_az=None,
            multi_az=bool(cluster.get("MultiAZ")) or len(members) > 1,
            members=members,
            engine_version=cluster.get("EngineVersion", ""),
            instance_class=next((r.get("DBInstanceClass", "") for r in rows), ""),
            endpoint=(host, port or 5432) if host else None,
        )

    def guard(self) -> str:
        cluster, rows = self._rows()
        settings = self._session.settings
        found = check_tags(settings, self.label, tag_dict(cluster.get("TagList")))
        for row in rows:  # the failover reboots members too: each must be non-production
            check_tags(
                settings, f"RDS DB instance {row.get('DBInstanceIdentifier')}", tag_dict(row.get("TagList"))
            )
        return found

    def steady_problem(self, view: RdsView) -> str | None:
        if view.status != "available":
            return f"{self.label} is {view.status}, not available"
        readers = [m for m in view.members if not m.writer]
        if not readers:
            return f"{self.label} has no reader instance to fail over to"
        busy = [f"{m.instance_id}={m.status}" for m in view.members if m.status != "available"]
        if busy:
            return f"{self.label} members not available: {', '.join(busy)}"
        return None

    def failover_target(self, view: RdsView) -> Member | None:
        """A reader in another AZ when there is one, so the failover also crosses zones."""
        readers = [m for m in view.members if not m.writer]
        other_az = [m for m in readers if m.az and m.az != view.az]
        choices = other_az or readers
        return choices[0] if choices else None

    def fail_over(self, view: RdsView) -> str:
        target = self.failover_target(view)
        rds = self._session.rds()
        with aws_call("rds:FailoverDBCluster", self.source_id):
            if target is None:
                rds.failover_db_cluster(DBClusterIdentifier=self.source_id)
            else:
                rds.failover_db_cluster(
                    DBClusterIdentifier=self.source_id, TargetDBInstanceIdentifier=target.instance_id
                )
        to = f" to {target.instance_id} ({target.az or '?'})" if target else ""
        return f"failover_db_cluster on {self.source_id}{to} (writer {view.writer} in {view.az or '?'})"

    def moved(self, before: RdsView, now: RdsView) -> tuple[bool, str]:
        if now.writer == before.writer:
            return False, f"writer still {now.writer}"
        zones = f"{before.az or '?'} -> {now.az or '?'}"
        crossed = "" if before.az != now.az else " (same AZ: no reader in another zone)"
        return True, f"writer {before.writer} -> {now.writer}, AZ {zones}{crossed}"


class RdsFailoverTarget:
    """Implements firedrill.targets.base.FailoverTarget."""

    def __init__(
        self,
        session: AwsSession,
        settings: RdsSettings,
        database: _Database,
        endpoint: PgEndpoint,
        *,
        identity: Identity,
        guard: str,
    ) -> None:
        self._session = session
        self._settings = settings
        self._db = database
        self._endpoint = endpoint
        self.identity = identity
        self.guardrail = guard
        self.label = database.label
        self._before: RdsView | None = None
        self._fault_at: datetime | None = None
        self._events: EventLog | None = None
        self._moved: str | None = None

    # ---- description ---------------------------------------------------------------------------
    def describe(self) -> TargetDescription:
        view = self._db.observe()
        s = self._session.settings
        host, port = self._endpoint.hosts[0]
        nodes = [
            Node(
                name=m.instance_id,
                role="primary" if m.writer else "replica",
                address=f"{host}:{port} ({m.az or '?'})" if m.writer else (m.az or "?"),
                version=view.engine_version,
            )
            for m in view.members
        ]
        if isinstance(self._db, MultiAzInstance) and view.multi_az:
            nodes.append(
                Node(name=f"{view.writer} (standby)", role="standby", address=view.standby_az or "?")
            )
        password = self._settings.password.reference() if self._settings.password else "none"
        return TargetDescription(
            kind="postgres",
            environment_kind="aws",
            servers={"postgresql": view.engine_version, "service": "Amazon RDS"},
            nodes=tuple(nodes),
            settings={
                "resource": self._db.label,
                "region": s.region,
                "account": self.identity.account,
                "caller": self.identity.arn,
                "instance_class": view.instance_class,
                "multi_az": str(view.multi_az).lower(),
                "replication": "synchronous (Multi-AZ)"
                if isinstance(self._db, MultiAzInstance)
                else "Aurora shared storage",
                "endpoint": f"{host}:{port}",
                "sslmode": self._endpoint.sslmode,
                "password": password,  # the reference only
                "guardrail": self.guardrail,
            },
        )

    def supported_faults(self) -> frozenset[FaultKind]:
        return frozenset({FaultKind.REBOOT_FAILOVER})

    def promotion_is_manual(self) -> bool:
        return False

    def endpoint(self) -> PgEndpoint:
        return self._endpoint

    def drill_lease(self) -> TagLease:
        """One drill per database at a time: a `firedrill:lease` tag on the instance or cluster."""
        return rds_lease(self._session, self._db.source_type, self._db.source_id, self.label)

    # ---- drill steps ---------------------------------------------------------------------------
    def check_steady_state(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        view = wait_steady(
            self._db.label,
            self._db.observe,
            self._db.steady_problem,
            delay_s=self._session.settings.poll_delay_s,
            timeout_s=timeout_s,
            logger=log,
        )
        with self._endpoint.connect() as conn:
            row = conn.execute("SELECT current_setting('server_version')").fetchone()
        observed = {
            "status": view.status,
            "writer": view.writer,
            "writer_az": view.az or "?",
            "members": ", ".join(f"{m.instance_id}@{m.az or '?'}" for m in view.members),
            "endpoint_server_version": str(row[0]) if row else "?",
        }
        if view.standby_az:
            observed["standby_az"] = view.standby_az
        return observed

    def prepare_canary(self, run_id: str) -> None:
        with self._endpoint.connect() as conn:
            pg_canary.prepare_canary(conn)

    def session_factory(self, run_id: str, probe: ProbeConfig) -> SessionFactory:
        endpoint = self._endpoint
        return lambda: PgCanarySession(endpoint, run_id, probe)

    def inject(self, fault: FaultSpec) -> str:
        if fault.kind is not FaultKind.REBOOT_FAILOVER:
            raise ConfigError(f"fault '{fault.kind}' is not supported by {self._db.label}")
        before = self._db.observe()
        problem = self._db.steady_problem(before)
        if problem:
            raise SteadyStateNotMet(f"{problem}; no failover issued")
        self._before = before
        self._fault_at = datetime.now(UTC)
        self._events = EventLog(self._db.label, self._fetch_events, self._fault_at, logger=log)
        return self._db.fail_over(before)

    def _fetch_events(self, since: datetime) -> list[tuple[datetime, str]]:
        with aws_call("rds:DescribeEvents", self._db.source_id):
            events = self._session.rds().describe_events(
                SourceIdentifier=self._db.source_id, SourceType=self._db.source_type, StartTime=since
            )["Events"]
        return [(e["Date"], e.get("Message", "")) for e in events if "Date" in e]

    def clear(self, fault: FaultSpec) -> str:
        return "nothing to clear"

    def promote(self, *, timeout_s: float) -> str:
        """Wait for RDS to finish the failover. The platform's own deadline (`failover_timeout_s`)
        applies when it is longer than the caller's: a Multi-AZ failover takes minutes."""
        before, events = self._before, self._events
        if before is None or events is None:
            raise TargetError("no failover was issued, so there is nothing to wait for")
        seen_busy = False

        def poll() -> tuple[bool, str]:
            nonlocal seen_busy
            view = self._db.observe()
            events.poll()
            seen_busy = seen_busy or view.status != "available"
            moved, _ = self._db.moved(before, view)
            done = view.status == "available" and (moved or seen_busy or events.matches(FAILOVER_DONE))
            return done, view.line()

        policy = self._session.policy(max(timeout_s, self._session.settings.failover_timeout_s))
        _, waited = wait_for(f"{self._db.label} failover", poll, policy, logger=log)
        now = self._db.observe()
        moved, how = self._db.moved(before, now)
        if not moved:
            raise TargetError(
                f"{self._db.label} reports the failover done after {waited:.1f} s but {how}: "
                "the writer did not move",
                code="FailoverNotObserved",
            )
        self._moved = how
        return f"{self._db.label}: {how} after {waited:.1f} s; events: {events.summary()}"

    def recovered_nodes(self, fault: FaultSpec) -> frozenset[str] | None:
        return None  # the endpoint's DNS name follows the writer: any node behind it counts

    def read_back(self, run_id: str) -> frozenset[int]:
        with self._endpoint.connect() as conn:
            return pg_canary.read_back(conn, run_id)

    def restore_topology(self, *, timeout_s: float) -> str:
        """RDS rebuilds redundancy itself: wait (with the caller's deadline) until it reports steady."""

        def poll() -> tuple[bool, str]:
            view = self._db.observe()
            problem = self._db.steady_problem(view)
            return problem is None, problem or view.line()

        wait_for(f"{self._db.label} redundancy", poll, self._session.policy(timeout_s), logger=log)
        view = self._db.observe()
        where = f"writer {view.writer} in {view.az or '?'}"
        if view.standby_az:
            where += f", standby in {view.standby_az}"
        verified = f"; failover verified: {self._moved}" if self._moved else ""
        self._before = self._events = None
        return f"{self._db.label} available with redundancy ({where}){verified}"

    def plan_checks(self) -> list[str]:
        """Nothing beyond the guardrails: the instance or cluster is read when planning."""
        return []

    def plan(self, *, rate_hz: float) -> list[Change]:
        """What a failover drill would change here (for `firedrill plan`); reads state only."""
        view = self._db.observe()
        host, port = self._endpoint.hosts[0]
        where = f"{host}:{port}/{self._endpoint.dbname} as {self._endpoint.user}"
        s = self._session.settings
        if isinstance(self._db, AuroraCluster):
            target = self._db.failover_target(view)
            to = f"{target.instance_id} ({target.az or '?'})" if target else "a reader chosen by Aurora"
            fault = Change(
                "aws",
                "rds:FailoverDBCluster",
                self._db.source_id,
                f"writer {view.writer} ({view.az or '?'}) -> {to}; connections to the writer drop "
                "(typically under 60 s of write unavailability)",
            )
        else:
            fault = Change(
                "aws",
                "rds:RebootDBInstance",
                self._db.source_id,
                f"ForceFailover=True: writer {view.az or '?'} -> standby {view.standby_az or '?'}; every "
                "connection drops (typically 60-120 s of unavailability)",
            )
        return [
            Change("data", "CREATE TABLE IF NOT EXISTS", pg_canary.CANARY_TABLE, f"on {where}"),
            Change(
                "data",
                "INSERT",
                pg_canary.CANARY_TABLE,
                f"~{rate_hz:g} rows/s (one per canary write, keyed by run id) for the drill's duration; kept",
            ),
            fault,
            Change(
                "wait",
                "poll DescribeDBInstances/DescribeEvents",
                self._db.source_id,
                f"until the writer moved, at most {s.failover_timeout_s:g} s, every {s.poll_delay_s:g} s",
            ),
        ]

    def close(self) -> None:
        """Nothing to release: boto3 clients and probe connections close themselves."""


def endpoint_for(
    session: AwsSession, settings: RdsSettings, view: RdsView, label: str, *, resolve_secrets: bool = True
) -> PgEndpoint:
    if settings.endpoint:
        host, port = parse_endpoint(settings.endpoint, 5432)
    elif view.endpoint:
        host, port = view.endpoint
    else:
        raise TargetError(f"{label} reports no endpoint yet (is it still being created?)")
    password = None
    if settings.password is not None and resolve_secrets:
        password = session.resolve_secret(settings.password, f"{label} password")
    return PgEndpoint(
        hosts=((host, port),),
        dbname=settings.dbname,
        user=settings.user,
        password=password,
        sslmode=settings.sslmode,
    )


def connect_rds(session: AwsSession, *, resolve_secrets: bool = True) -> RdsFailoverTarget:
    """Guardrails first (account, then tags), then the adapter. Read-only until a drill injects.
    `resolve_secrets=False` (plans) leaves the password unread."""
    settings = session.settings.rds
    if settings is None:
        raise ConfigError("the profile's aws section has no [rds] part")
    identity = check_account(session)
    database: _Database
    if settings.db_cluster_id:
        database = AuroraCluster(session, settings.db_cluster_id)
    else:
        assert settings.db_instance_id is not None
        database = MultiAzInstance(session, settings.db_instance_id)
    guard = database.guard()
    view = database.observe()
    endpoint = endpoint_for(session, settings, view, database.label, resolve_secrets=resolve_secrets)
    log.info("%s in account %s (%s): %s", database.label, identity.account, guard, view.line())
    return RdsFailoverTarget(session, settings, database, endpoint, identity=identity, guard=guard)


@contextmanager
def open_rds_target(profile: Profile, session: AwsSession | None = None) -> Iterator[RdsFailoverTarget]:
    target = connect_rds(session or AwsSession(aws_settings(profile)))
    try:
        yield target
    finally:
        target.close()


def plan_target(session: AwsSession) -> RdsFailoverTarget:
    """The failover target opened for `firedrill plan`: guardrails run, no secret is read."""
    return connect_rds(session, resolve_secrets=False)
