"""The AWS FIS experiment template of the zone drill, and its plan: what the template would point at
(found and held to the guardrails with read-only calls), the CreateExperimentTemplate request (pure),
and `firedrill plan zone-loss --env <aws profile>` (nothing is created or started).

See `firedrill.targets.aws_fis` for the actions, the stop conditions and the experiment's life.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from firedrill.aws.errors import aws_call
from firedrill.aws.guardrails import (
    NOTHING_CHANGED,
    TAG_MANAGED,
    TAG_RUN_ID,
    check_account,
    check_tags,
    tag_dict,
)
from firedrill.aws.session import AwsSession
from firedrill.config import AwsSettings
from firedrill.config_zones import FisSettings
from firedrill.errors import ConfigError, GuardrailError, TargetError
from firedrill.targets.base import Change

TARGET_TAG = "firedrill:fis-target"  # FIS selects ElastiCache groups by tag: this one names the group


@dataclass(frozen=True, slots=True)
class FisTargets:
    """What the template points at, found and guard-railed before anything is created."""

    rds_arn: str | None = None
    rds_is_cluster: bool = True
    cache_group: str | None = None


def build_template(
    settings: AwsSettings, fis: FisSettings, targets: FisTargets, *, run_id: str
) -> dict[str, Any]:
    """The CreateExperimentTemplate request (pure: no AWS call)."""
    az = fis.availability_zone
    tmpl_targets: dict[str, Any] = {}
    actions: dict[str, Any] = {}
    if fis.rds_failover and targets.rds_arn:
        kind = "aws:rds:cluster" if targets.rds_is_cluster else "aws:rds:db"
        tmpl_targets["Database"] = {
            "resourceType": kind,
            "resourceArns": [targets.rds_arn],
            "selectionMode": "ALL",
        }
        if targets.rds_is_cluster:
            actions["failover-db"] = {
                "actionId": "aws:rds:failover-db-cluster",
                "targets": {"Clusters": "Database"},
            }
        else:
            actions["failover-db"] = {
                "actionId": "aws:rds:reboot-db-instances",
                "parameters": {"forceFailover": "true"},
                "targets": {"DBInstances": "Database"},
            }
    if fis.elasticache_power and targets.cache_group:
        tmpl_targets["CacheGroups"] = {
            "resourceType": "aws:elasticache:replicationgroup",
            "resourceTags": {TARGET_TAG: targets.cache_group},
            "parameters": {"availabilityZoneIdentifier": az},
            "selectionMode": "ALL",
        }
        actions["interrupt-cache-power"] = {
            "actionId": "aws:elasticache:replicationgroup-interrupt-az-power",
            "parameters": {"duration": fis.duration},
            "targets": {"ReplicationGroups": "CacheGroups"},
        }
    if fis.vpc_id:
        tag = settings.nonprod_tag
        tmpl_targets["ZoneSubnets"] = {
            "resourceType": "aws:ec2:subnet",
            "resourceTags": {tag.key: tag.allowed[0]},
            "parameters": {"availabilityZoneIdentifier": az, "vpc": fis.vpc_id},
            "selectionMode": "ALL",
        }
        actions["disrupt-zone-network"] = {
            "actionId": "aws:network:disrupt-connectivity",
            "parameters": {"duration": fis.duration, "scope": "all"},
            "targets": {"Subnets": "ZoneSubnets"},
        }
    if not actions:
        raise ConfigError("the FIS experiment would do nothing: no RDS, ElastiCache or VPC target")
    return {
        "clientToken": f"firedrill-{run_id}",
        "description": f"firedrill zone outage of {az} ({run_id})"[:512],
        "roleArn": fis.role_arn,
        "targets": tmpl_targets,
        "actions": actions,
        "stopConditions": [{"source": "aws:cloudwatch:alarm", "value": arn} for arn in fis.stop_alarm_arns],
        "tags": fis_tags(settings, run_id),
        "experimentOptions": {"accountTargeting": "single-account", "emptyTargetResolutionMode": "fail"},
    }


def fis_tags(settings: AwsSettings, run_id: str) -> dict[str, str]:
    tag = settings.nonprod_tag
    return {TAG_MANAGED: "true", TAG_RUN_ID: run_id, tag.key: tag.allowed[0]}


def describe_actions(template: dict[str, Any]) -> list[str]:
    out = []
    for name, action in template["actions"].items():
        on = ", ".join(f"{k}={v}" for k, v in action.get("targets", {}).items())
        params = ", ".join(f"{k}={v}" for k, v in action.get("parameters", {}).items())
        out.append(f"{name}: {action['actionId']} on {on}" + (f" ({params})" if params else ""))
    return out


def fis_targets(session: AwsSession, fis: FisSettings) -> FisTargets:
    """Find what the template would point at and hold it to the guardrails (read-only calls only): the
    database and the replication group carry the non-production tag, and the group names itself in
    `firedrill:fis-target`, so FIS's tag selection can match it and nothing else."""
    s = session.settings
    rds_arn: str | None = None
    is_cluster = True
    group: str | None = None
    if fis.rds_failover and s.rds is not None:
        if s.rds.db_cluster_id:
            cid = s.rds.db_cluster_id
            with aws_call("rds:DescribeDBClusters", cid):
                clusters = session.rds().describe_db_clusters(DBClusterIdentifier=cid)["DBClusters"]
            if not clusters:
                raise TargetError(f"Aurora cluster {cid} not found", code="DBClusterNotFoundFault")
            check_tags(s, f"Aurora cluster {cid}", tag_dict(clusters[0].get("TagList")))
            rds_arn = clusters[0].get("DBClusterArn")
        elif s.rds.db_instance_id:
            iid = s.rds.db_instance_id
            with aws_call("rds:DescribeDBInstances", iid):
                rows = session.rds().describe_db_instances(DBInstanceIdentifier=iid)["DBInstances"]
            if not rows:
                raise TargetError(f"DB instance {iid} not found", code="DBInstanceNotFound")
            check_tags(s, f"DB instance {iid}", tag_dict(rows[0].get("TagList")))
            rds_arn, is_cluster = rows[0].get("DBInstanceArn"), False
    if fis.elasticache_power and s.elasticache is not None:
        rg = s.elasticache.replication_group_id
        with aws_call("elasticache:DescribeReplicationGroups", rg):
            found = session.elasticache().describe_replication_groups(ReplicationGroupId=rg)[
                "ReplicationGroups"
            ]
        if not found:
            raise TargetError(
                f"ElastiCache replication group {rg} not found", code="ReplicationGroupNotFoundFault"
            )
        with aws_call("elasticache:ListTagsForResource", rg):
            tags = tag_dict(
                session.elasticache().list_tags_for_resource(ResourceName=found[0].get("ARN", rg))["TagList"]
            )
        check_tags(s, f"ElastiCache replication group {rg}", tags)
        if tags.get(TARGET_TAG) != rg:
            raise GuardrailError(
                f"refused: ElastiCache replication group {rg} must carry the tag {TARGET_TAG}={rg} (FIS "
                "selects replication groups by tag only; this one keeps the experiment to this group); "
                f"{NOTHING_CHANGED}"
            )
        group = rg
    return FisTargets(rds_arn=rds_arn, rds_is_cluster=is_cluster, cache_group=group)


class FisPlan:
    """`firedrill plan zone-loss --env <aws profile>`: guardrails run, targets found, nothing changed."""

    def __init__(self, session: AwsSession) -> None:
        fis = session.settings.fis
        if fis is None:
            raise ConfigError("the profile's aws section has no [fis] part (the zone drill's experiment)")
        self.session, self.fis = session, fis
        self.identity = check_account(session)
        self.targets = fis_targets(session, fis)
        self.label = f"FIS zone outage of {fis.availability_zone}"
        tag = session.settings.nonprod_tag
        self.guardrail = f"{tag.key}={'|'.join(tag.allowed)} on every target"

    def plan_checks(self) -> list[str]:
        found = [f"database {self.targets.rds_arn}"] if self.targets.rds_arn else []
        if self.targets.cache_group:
            found.append(f"replication group {self.targets.cache_group} (tagged {TARGET_TAG})")
        return [
            f"targets: {', '.join(found) or 'none'}",
            f"stop conditions: {', '.join(self.fis.stop_alarm_arns)}",
        ]

    def plan(self, *, rate_hz: float) -> list[Change]:
        template = build_template(self.session.settings, self.fis, self.targets, run_id="<run id>")
        s = self.session.settings
        changes = [Change("data", "canary writes", "the database and the cache", f"~{rate_hz:g}/s each")]
        if self.fis.template_id:
            changes.append(Change("aws", "fis:GetExperimentTemplate", self.fis.template_id, "must be tagged"))
        else:
            changes.append(
                Change(
                    "aws",
                    "fis:CreateExperimentTemplate",
                    f"role {self.fis.role_arn}",
                    "tagged firedrill:managed",
                )
            )
        for action in describe_actions(template):
            changes.append(Change("aws", "fis:StartExperiment", self.fis.availability_zone, action))
        changes += [
            Change(
                "wait",
                "poll fis:GetExperiment",
                "the experiment",
                f"until running, every {s.poll_delay_s:g} s",
            ),
            Change(
                "aws",
                "fis:StopExperiment",
                "the experiment",
                "on an error, abort, Ctrl-C/SIGTERM or at the drill's end if still running",
            ),
        ]
        if not self.fis.template_id:
            changes.append(
                Change("aws", "fis:DeleteExperimentTemplate", "the run's template", "after the end")
            )
        return changes


def plan_target(session: AwsSession) -> FisPlan:
    return FisPlan(session)
