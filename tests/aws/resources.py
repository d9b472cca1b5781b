"""Creating AWS resources in moto for tests, and the shapes Stubber scripts answer with."""

from __future__ import annotations

from typing import Any

from tests.aws.conftest import REGION

STAGING = [{"Key": "environment", "Value": "staging"}]
PRODUCTION = [{"Key": "environment", "Value": "production"}]


def create_instance(
    rds: Any, instance_id: str = "orders", *, tags: list[dict[str, str]] | None = None, multi_az: bool = True
) -> dict[str, Any]:
    return dict(
        rds.create_db_instance(
            DBInstanceIdentifier=instance_id,
            DBInstanceClass="db.t3.micro",
            Engine="postgres",
            MasterUsername="app",
            MasterUserPassword="not-a-real-password",
            AllocatedStorage=20,
            MultiAZ=multi_az,
            BackupRetentionPeriod=30,
            AvailabilityZone=f"{REGION}a",
            Tags=STAGING if tags is None else tags,
        )["DBInstance"]
    )


def create_aurora(
    rds: Any,
    cluster_id: str = "ledger",
    *,
    tags: list[dict[str, str]] | None = None,
    member_tags: list[dict[str, str]] | None = None,
) -> None:
    rds.create_db_cluster(
        DBClusterIdentifier=cluster_id,
        Engine="aurora-postgresql",
        MasterUsername="app",
        MasterUserPassword="not-a-real-password",
        Tags=STAGING if tags is None else tags,
    )
    for n, az in ((1, "a"), (2, "b")):
        rds.create_db_instance(
            DBInstanceIdentifier=f"{cluster_id}-{n}",
            DBClusterIdentifier=cluster_id,
            Engine="aurora-postgresql",
            DBInstanceClass="db.r6g.large",
            AvailabilityZone=f"{REGION}{az}",
            Tags=(member_tags if member_tags is not None and n == 2 else STAGING),
        )


def create_replication_group(
    ec: Any, group_id: str = "sessions", *, tags: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return dict(
        ec.create_replication_group(
            ReplicationGroupId=group_id,
            ReplicationGroupDescription="firedrill test",
            Engine="redis",
            CacheNodeType="cache.t3.micro",
            NumNodeGroups=1,
            ReplicasPerNodeGroup=1,
            AutomaticFailoverEnabled=True,
            MultiAZEnabled=True,
            Tags=STAGING if tags is None else tags,
        )["ReplicationGroup"]
    )


# ---- Stubber response shapes --------------------------------------------------------------------
def db_instance(
    status: str, az: str, standby_az: str | None, *, instance_id: str = "orders", endpoint: str = "orders.rds"
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "DBInstanceIdentifier": instance_id,
        "DBInstanceStatus": status,
        "AvailabilityZone": az,
        "MultiAZ": standby_az is not None,
        "Engine": "postgres",
        "EngineVersion": "15.5",
        "DBInstanceClass": "db.t3.micro",
        "Endpoint": {"Address": endpoint, "Port": 5432},
        "TagList": STAGING,
    }
    if standby_az:
        row["SecondaryAvailabilityZone"] = standby_az
    return row


def rds_event(source_id: str, message: str, when: Any, source_type: str = "db-instance") -> dict[str, Any]:
    return {
        "SourceIdentifier": source_id,
        "SourceType": source_type,
        "Message": message,
        "EventCategories": ["failover"],
        "Date": when,
    }
