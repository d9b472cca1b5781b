"""One drill per AWS resource at a time: the lease is a tag on the resource itself.

The tag is `firedrill:lease` = `<run id>/<user@host>/<pid>/<since>/<expires>` (UTC, ISO 8601 to the
second), on the RDS DB instance or Aurora cluster, or the ElastiCache replication group. RDS and
ElastiCache tag values may hold only letters, digits, white space and `_ . : / = + - @` (at most 256
characters), so `|` is out: the fields are joined by `/`, which none of them holds (any other
character of a user or host name becomes `_`).

- acquire: ListTagsForResource; a lease of another run whose expiry has not passed refuses the drill
  in one line naming the holder; an expired one is taken over (the drill's evidence says whose); then
  AddTagsToResource, a short settle, and the tags read again.
- renew (every ttl/4, LeaseKeeper): the tag written again with a new expiry, only while it is still
  ours (or gone: then taken again); another run's tag is never overwritten by a renewal.
- release: RemoveTagsFromResource, only if the tag is still ours.

Tags have no compare-and-set: two drills that both read "free" both write, and the last writer wins.
The read-back narrows that race (a drill whose read-back shows another run's lease backs off, so of
two writers only the last one proceeds, as long as both read back after both wrote: the settle delay
is for that); it does not close it, and AWS does not promise that a read right after a write sees it.
A dead holder is bounded by the expiry in its tag. The expiry is judged by the reader's clock (a tag
carries no server time), so hosts that drill the same account need synchronised clocks (NTP).

The lease talks to AWS through clients of its own (same credentials and settings): the keeper renews
on its own thread, and those calls never interleave with the drill's on the adapter's clients.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from firedrill.aws.errors import aws_call
from firedrill.aws.guardrails import tag_dict
from firedrill.aws.session import AwsSession
from firedrill.errors import TargetError
from firedrill.targets.base import Change
from firedrill.targets.lease import Holder, LeaseBusy, busy

log = logging.getLogger(__name__)

TAG_LEASE = "firedrill:lease"
SEP = "/"
MAX_VALUE = 256  # RDS and ElastiCache tag values
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
FIELD_CHARS = "_.:=+-"  # allowed in a tag value besides letters and digits; not the separator, not "@"
VALUE_FORMAT = "<run id>/<user@host>/<pid>/<since>/<expires>"


def tag_field(text: str, limit: int) -> str:
    """`text` as one field of the tag value: allowed characters only, no separator, at most `limit`."""
    return "".join(c if c.isalnum() or c in FIELD_CHARS else "_" for c in text)[:limit] or "_"


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime(TIME_FORMAT)


@dataclass(frozen=True, slots=True)
class LeaseTag:
    """The value of a `firedrill:lease` tag: who holds the resource, and until when."""

    holder: Holder
    expires: datetime

    @classmethod
    def of(cls, holder: Holder, expires: datetime) -> LeaseTag:
        """A holder as its tag spells it (fields cleaned to the characters tags allow)."""
        clean = Holder(
            user=tag_field(holder.user, 32),
            host=tag_field(holder.host, 64),
            pid=holder.pid,
            run_id=tag_field(holder.run_id, 100),
            since=tag_field(holder.since, 20),
        )
        return cls(clean, expires.astimezone(UTC).replace(microsecond=0))

    def value(self) -> str:
        h = self.holder
        text = SEP.join([h.run_id, f"{h.user}@{h.host}", str(h.pid), h.since, _stamp(self.expires)])
        assert len(text) <= MAX_VALUE, text
        return text

    @classmethod
    def parse(cls, text: str) -> LeaseTag | None:
        parts = text.split(SEP)
        if len(parts) != 5:
            return None
        run_id, who, pid, since, expires = parts
        user, at, host = who.partition("@")
        try:
            when = datetime.strptime(expires, TIME_FORMAT).replace(tzinfo=UTC)
            return cls(Holder(user, host, int(pid), run_id, since), when) if at else None
        except ValueError:
            return None

    def is_of(self, holder: Holder) -> bool:
        return self.holder.run_id == tag_field(holder.run_id, 100)


class TagApi(Protocol):
    """One resource's tags, through one service's tagging calls."""

    resource_id: str
    add_action: str  # e.g. "rds:AddTagsToResource", for the plan
    remove_action: str

    def read(self) -> dict[str, str]: ...

    def write(self, value: str) -> None: ...

    def remove(self) -> None: ...


class RdsTags:
    """Tags of an RDS DB instance or Aurora cluster, by its ARN (looked up once)."""

    add_action = "rds:AddTagsToResource"
    remove_action = "rds:RemoveTagsFromResource"

    def __init__(self, session: AwsSession, kind: str, resource_id: str) -> None:
        self._session = session
        self.kind = kind  # the RDS event source type: "db-instance" or "db-cluster"
        self.resource_id = resource_id
        self._arn: str | None = None

    def _resource(self) -> str:
        if self._arn is None:
            rds = self._session.rds()
            arn: str | None = None
            if self.kind == "db-cluster":
                with aws_call("rds:DescribeDBClusters", self.resource_id):
                    clusters = rds.describe_db_clusters(DBClusterIdentifier=self.resource_id)["DBClusters"]
                arn = clusters[0].get("DBClusterArn") if clusters else None
            else:
                with aws_call("rds:DescribeDBInstances", self.resource_id):
                    rows = rds.describe_db_instances(DBInstanceIdentifier=self.resource_id)["DBInstances"]
                arn = rows[0].get("DBInstanceArn") if rows else None
            if not arn:
                raise TargetError(f"RDS {self.kind} {self.resource_id} not found (no ARN to tag)")
            self._arn = arn
        return self._arn

    def read(self) -> dict[str, str]:
        arn = self._resource()
        with aws_call("rds:ListTagsForResource", self.resource_id):
            return tag_dict(self._session.rds().list_tags_for_resource(ResourceName=arn).get("TagList"))

    def write(self, value: str) -> None:
        arn = self._resource()
        with aws_call(self.add_action, self.resource_id):
            self._session.rds().add_tags_to_resource(
                ResourceName=arn, Tags=[{"Key": TAG_LEASE, "Value": value}]
            )

    def remove(self) -> None:
        arn = self._resource()
        with aws_call(self.remove_action, self.resource_id):
            self._session.rds().remove_tags_from_resource(ResourceName=arn, TagKeys=[TAG_LEASE])


class CacheTags:
    """Tags of an ElastiCache replication group, by its ARN (looked up once)."""

    add_action = "elasticache:AddTagsToResource"
    remove_action = "elasticache:RemoveTagsFromResource"

    def __init__(self, session: AwsSession, group_id: str) -> None:
        self._session = session
        self.resource_id = group_id
        self._arn: str | None = None

    def _resource(self) -> str:
        if self._arn is None:
            with aws_call("elasticache:DescribeReplicationGroups", self.resource_id):
                groups = self._session.elasticache().describe_replication_groups(
                    ReplicationGroupId=self.resource_id
                )["ReplicationGroups"]
            arn = groups[0].get("ARN") if groups else None
            if not arn:
                raise TargetError(f"ElastiCache replication group {self.resource_id} not found (no ARN)")
            self._arn = arn
        return self._arn

    def read(self) -> dict[str, str]:
        arn = self._resource()
        with aws_call("elasticache:ListTagsForResource", self.resource_id):
            found = self._session.elasticache().list_tags_for_resource(ResourceName=arn)
        return tag_dict(found.get("TagList"))

    def write(self, value: str) -> None:
        arn = self._resource()
        with aws_call(self.add_action, self.resource_id):
            self._session.elasticache().add_tags_to_resource(
                ResourceName=arn, Tags=[{"Key": TAG_LEASE, "Value": value}]
            )

    def remove(self) -> None:
        arn = self._resource()
        with aws_call(self.remove_action, self.resource_id):
            self._session.elasticache().remove_tags_from_resource(ResourceName=arn, TagKeys=[TAG_LEASE])


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class TagLease:
    """A drill lease held in a `firedrill:lease` tag (implements firedrill.targets.lease.DrillLease
    and PlannedLease)."""

    tags: TagApi
    name: str  # "RDS DB instance orders"
    ttl_s: float
    settle_s: float = 1.0  # between writing the tag and reading it back
    clock: Callable[[], datetime] = field(default=_now)

    def _current(self) -> tuple[str | None, LeaseTag | None]:
        raw = self.tags.read().get(TAG_LEASE)
        return raw, (LeaseTag.parse(raw) if raw is not None else None)

    def _unreadable(self, raw: str) -> LeaseBusy:
        return LeaseBusy(
            f"{self.name} carries a {TAG_LEASE} tag firedrill cannot read ({raw!r}): remove it if no drill "
            "is running; one drill per target at a time"
        )

    def _mine(self, holder: Holder) -> LeaseTag:
        return LeaseTag.of(holder, self.clock() + timedelta(seconds=self.ttl_s))

    def acquire(self, holder: Holder) -> str | None:
        raw, current = self._current()
        note = None
        if raw is not None and current is None:
            raise self._unreadable(raw)
        if current is not None and not current.is_of(holder):
            if current.expires > self.clock():
                raise busy(self.name, current.holder)
            note = (
                f"an expired lease of {current.holder.describe()}, expired {_stamp(current.expires)}, "
                "was taken over"
            )
            log.warning("%s: %s", self.name, note)
        ours = self._mine(holder)
        self.tags.write(ours.value())
        # Last writer wins: read back, so that of two drills writing at once only the last proceeds.
        time.sleep(self.settle_s)
        raw, after = self._current()
        if after is not None and after.is_of(holder):
            return note
        if after is not None and after.expires > self.clock():
            raise busy(self.name, after.holder)
        raise LeaseBusy(
            f"{self.name}: the {TAG_LEASE} tag just written reads back as {raw!r}: another drill may be "
            "starting; one drill per target at a time"
        )

    def renew(self, holder: Holder) -> bool:
        try:
            raw, current = self._current()
            if raw is not None and (current is None or not current.is_of(holder)):
                log.error("%s: the lease tag reads %r, not this run's: not renewed over it", self.name, raw)
                return False
            self.tags.write(self._mine(holder).value())
        except TargetError as exc:
            log.warning("lease tag of %s not renewed: %s", self.name, exc)
            return False
        return True

    def release(self, holder: Holder) -> None:
        raw, current = self._current()
        if current is not None and current.is_of(holder):
            self.tags.remove()
        elif raw is not None:
            log.warning("%s: the lease tag reads %r, not this run's: left in place", self.name, raw)

    def plan_changes(self) -> tuple[list[Change], list[Change]]:
        rid = self.tags.resource_id
        take = Change(
            "aws",
            self.tags.add_action,
            rid,
            f"tag {TAG_LEASE} = {VALUE_FORMAT} once its tags (ListTagsForResource) show no unexpired "
            f"lease of another drill (refused otherwise); written again every {self.ttl_s / 4:g} s with a "
            f"new expiry (ttl {self.ttl_s:g} s)",
        )
        after = "only if still this run's, once the evidence is written"
        give = Change("aws", self.tags.remove_action, rid, f"tag {TAG_LEASE}, {after}")
        return [take], [give]


def _own_session(session: AwsSession) -> AwsSession:
    """Clients of the lease's own, on the same credentials and settings (see the module docstring)."""
    return AwsSession(session.settings, boto_session=session.boto_session)


def _settle(session: AwsSession) -> float:
    return min(2.0, session.settings.poll_delay_s)


def rds_lease(session: AwsSession, kind: str, resource_id: str, name: str) -> TagLease:
    """The lease of an RDS DB instance ("db-instance") or Aurora cluster ("db-cluster")."""
    own = _own_session(session)
    tags = RdsTags(own, kind, resource_id)
    return TagLease(tags, name, ttl_s=session.settings.lease_ttl_s, settle_s=_settle(session))


def cache_lease(session: AwsSession, group_id: str, name: str) -> TagLease:
    """The lease of an ElastiCache replication group."""
    own = _own_session(session)
    return TagLease(
        CacheTags(own, group_id), name, ttl_s=session.settings.lease_ttl_s, settle_s=_settle(session)
    )
