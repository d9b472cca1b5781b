"""botocore errors translated into the firedrill's own, at the boundary, keyed on the vendor's code.

Every AWS call goes through `aws_call("rds:RebootDBInstance", "orders")`. What leaves it is a
`TargetError` whose `code` is AWS's error code (or botocore's exception name when AWS never answered),
with one line that names the action, the resource, AWS's message and, for the codes that have one, what
to do about it. Nothing of the request (which could hold a password) is ever echoed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from firedrill.errors import HarnessError, TargetError

_IAM = "see iam/firedrill-drill-policy.json"
_THROTTLED = "AWS throttled the call after botocore's retries; raise max_retries or retry later"
_BUSY = "the instance is busy (modifying, backing up, rebooting): retry when available"

HINTS: dict[str, str] = {
    "AccessDenied": f"the caller's IAM policy does not allow it ({_IAM})",
    "AccessDeniedException": f"the caller's IAM policy does not allow it ({_IAM})",
    "UnauthorizedOperation": f"the caller's IAM policy does not allow it ({_IAM})",
    "ExpiredToken": "the AWS session token has expired: log in again (aws sso login, or refresh the role)",
    "ExpiredTokenException": "the AWS session token has expired: log in again",
    "InvalidClientTokenId": "the access key is not valid in this partition/region",
    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
    "Throttling": _THROTTLED,
    "ThrottlingException": _THROTTLED,
    "RequestLimitExceeded": _THROTTLED,
    "DBInstanceNotFound": "check db_instance_id and region in the profile",
    "DBInstanceNotFoundFault": "check db_instance_id and region in the profile",
    "DBClusterNotFoundFault": "check db_cluster_id and region in the profile",
    "ReplicationGroupNotFoundFault": "check replication_group_id and region in the profile",
    "NodeGroupNotFoundFault": "check node_group_id in the profile",
    "InvalidDBInstanceState": _BUSY,
    "InvalidDBInstanceStateFault": _BUSY,
    "InvalidDBClusterStateFault": "the cluster is busy: retry when it is available",
    "InvalidReplicationGroupState": "the replication group is busy: retry when it is available",
    "InvalidReplicationGroupStateFault": "the replication group is busy: retry when it is available",
    "TestFailoverNotAvailableFault": "ElastiCache allows a limited number of test failovers per day",
    "APICallRateForCustomerExceeded": "ElastiCache allows a limited number of test failovers per day",
    "DBInstanceAlreadyExists": "a temporary instance with this id exists: run `firedrill aws cleanup`",
    "DBInstanceAlreadyExistsFault": "a temporary instance with this id exists: run `firedrill aws cleanup`",
    "PointInTimeRestoreNotEnabled": "automated backups are off (BackupRetentionPeriod is 0)",
    "PointInTimeRestoreNotEnabledFault": "automated backups are off (BackupRetentionPeriod is 0)",
    "InvalidRestoreFault": "the restore time is outside the restorable window",
    "InstanceQuotaExceeded": "the account's DB instance quota is reached: run `firedrill aws cleanup`",
    "ResourceNotFoundException": "check the secret id and region",
    "DecryptionFailure": "the caller may not use the secret's KMS key",
}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def translate(exc: Exception, action: str, resource: str = "") -> HarnessError:
    """The firedrill error for a botocore exception raised by `action` on `resource`."""
    where = f"{action} on {resource}" if resource else action
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        message = _one_line(str(error.get("Message") or "")) or code
        hint = HINTS.get(code)
        return TargetError(f"{where} failed: {message} ({code}){'; ' + hint if hint else ''}", code=code)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return TargetError(
            f"{where}: no usable AWS credentials (the standard boto3 chain: AWS_PROFILE/AWS_ACCESS_KEY_ID, "
            "~/.aws, SSO, instance or task role)",
            code=type(exc).__name__,
        )
    if isinstance(exc, NoRegionError):
        return TargetError(f"{where}: no AWS region (set aws.region in the profile)", code="NoRegionError")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return TargetError(
            f"{where}: cannot reach the AWS endpoint: {_one_line(str(exc))}", code=type(exc).__name__
        )
    if isinstance(exc, ReadTimeoutError):
        return TargetError(
            f"{where}: AWS did not answer in time: {_one_line(str(exc))}", code="ReadTimeoutError"
        )
    if isinstance(exc, BotoCoreError):
        return TargetError(f"{where} failed: {_one_line(str(exc))}", code=type(exc).__name__)
    return TargetError(f"{where} failed: {type(exc).__name__}: {_one_line(str(exc))}")


@contextmanager
def aws_call(action: str, resource: str = "") -> Iterator[None]:
    """Run AWS calls; re-raise botocore's exceptions as the firedrill's (the original chained)."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, action, resource) from exc
