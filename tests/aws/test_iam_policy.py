"""iam/firedrill-drill-policy.json names every AWS action the code calls, and nothing more.

The code is scanned, not run: every `<client>.<operation>(...)` call (and `get_paginator("op")`) in
firedrill/aws/, firedrill/targets/aws_*.py and the S3 adapter (firedrill/targets/s3_bucket.py) whose
name is an operation of a service firedrill uses is mapped to its IAM action ("rds:RebootDBInstance").
The service is taken from the receiver (`session.rds()`, or a variable assigned from it) when the
operation name exists in more than one. S3's IAM actions are not named after its operations
(ListObjectVersions is s3:ListBucketVersions, a multipart upload is s3:PutObject): S3_IAM maps them.
"""

from __future__ import annotations

import ast
import fnmatch
import json
from pathlib import Path

import botocore.session
from botocore import xform_name

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "iam" / "firedrill-drill-policy.json"
SERVICES = ("rds", "elasticache", "sts", "secretsmanager", "s3", "fis", "cloudwatch")  # client == IAM prefix
# Permissions AWS checks on top of the called action (service authorization reference).
IMPLIED = {
    "rds:RestoreDBInstanceToPointInTime": {"rds:AddTagsToResource"},  # Tags= on create
    "fis:CreateExperimentTemplate": {"fis:TagResource", "iam:PassRole"},  # tags=, roleArn= (the FIS role)
    "fis:StartExperiment": {"fis:TagResource"},  # tags= on the experiment
}
# S3 operations -> the IAM actions AWS checks for them (the S3 actions reference: "Operations").
_COPY = {"s3:PutObject", "s3:GetObjectVersion"}  # a copy of a given version: read it, write the key
S3_IAM = {
    "s3:ListObjectVersions": {"s3:ListBucketVersions"},
    "s3:GetBucketLifecycleConfiguration": {"s3:GetLifecycleConfiguration"},
    "s3:GetBucketReplication": {"s3:GetReplicationConfiguration"},
    "s3:HeadObject": {"s3:GetObject"},
    "s3:CreateMultipartUpload": {"s3:PutObject"},
    "s3:UploadPart": {"s3:PutObject"},
    "s3:CompleteMultipartUpload": {"s3:PutObject"},
    "s3:CopyObject": _COPY,
    "s3:UploadPartCopy": _COPY,
    # per key: a delete marker (no VersionId) or a version removed (VersionId)
    "s3:DeleteObjects": {"s3:DeleteObject", "s3:DeleteObjectVersion"},
}


def iam_actions(action: str) -> set[str]:
    """The IAM actions one scanned call needs."""
    return S3_IAM.get(action, {action}) | IMPLIED.get(action, set())


def _operations() -> dict[str, dict[str, str]]:
    """snake_case method name -> {service: OperationName}."""
    session = botocore.session.get_session()
    ops: dict[str, dict[str, str]] = {}
    for service in SERVICES:
        for op in session.get_service_model(service).operation_names:
            ops.setdefault(xform_name(op), {})[service] = op
    return ops


def _service_of(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """`x.rds()` -> "rds"; a name assigned from such a call -> its service."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SERVICES:
        return node.func.attr
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    return None


def scan(paths: list[Path]) -> set[str]:
    ops = _operations()
    actions: set[str] = set()
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        aliases = {
            t.id: svc
            for n in ast.walk(tree)
            if isinstance(n, ast.Assign)
            for t in n.targets
            if isinstance(t, ast.Name) and (svc := _service_of(n.value, {})) is not None
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name, receiver = node.func.attr, node.func.value
            if name == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
                name = str(node.args[0].value)
            if name not in ops:
                continue
            candidates = ops[name]
            service = _service_of(receiver, aliases)
            if service is None and len(candidates) == 1:
                service = next(iter(candidates))
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert service in candidates, f"{where}: cannot tell which service {name}() belongs to"
            actions.add(f"{service}:{candidates[service]}")
    return actions


def _policy_actions() -> list[tuple[str, dict[str, object]]]:
    doc = json.loads(POLICY.read_text(encoding="utf-8"))
    assert doc["Version"] == "2012-10-17"
    out = []
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st, st
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        out += [(a, st) for a in actions]
    return out


def code_paths() -> list[Path]:
    return (
        sorted((ROOT / "firedrill" / "aws").glob("*.py"))
        + sorted((ROOT / "firedrill" / "targets").glob("aws_*.py"))
        + [ROOT / "firedrill" / "targets" / "s3_bucket.py"]
    )


def test_the_scan_finds_the_calls_that_matter() -> None:
    found = scan(code_paths())
    assert {
        "sts:GetCallerIdentity",
        "rds:RebootDBInstance",
        "rds:FailoverDBCluster",
        "rds:RestoreDBInstanceToPointInTime",
        "rds:DeleteDBInstance",
        "rds:DescribeEvents",
        "elasticache:TestFailover",
        "elasticache:DescribeEvents",
        "elasticache:ListTagsForResource",
        "rds:ListTagsForResource",  # the drill lease tag (targets/aws_lease.py)
        "rds:AddTagsToResource",
        "rds:RemoveTagsFromResource",
        "elasticache:AddTagsToResource",
        "elasticache:RemoveTagsFromResource",
        "secretsmanager:GetSecretValue",
        "s3:GetBucketTagging",
        "s3:GetBucketVersioning",
        "s3:ListObjectVersions",
        "s3:UploadPart",
        "s3:UploadPartCopy",
        "s3:DeleteObjects",
        "fis:CreateExperimentTemplate",
        "fis:StartExperiment",
        "fis:GetExperiment",
        "fis:StopExperiment",
        "fis:DeleteExperimentTemplate",
        "cloudwatch:DescribeAlarms",
    } <= found
    assert set(S3_IAM) <= found, "an S3 mapping no code needs any more"


def test_policy_names_every_action_the_code_calls() -> None:
    needed = set()
    for action in scan(code_paths()):
        needed |= iam_actions(action)
    granted = [a for a, _ in _policy_actions()]
    missing = sorted(a for a in needed if not any(fnmatch.fnmatchcase(a, g) for g in granted))
    assert not missing, f"iam/firedrill-drill-policy.json lacks: {', '.join(missing)}"


def test_policy_grants_nothing_the_code_does_not_call() -> None:
    needed = set()
    for action in scan(code_paths()):
        needed |= iam_actions(action)
    granted = {a for a, _ in _policy_actions()}
    assert not any("*" in a for a in granted), "no action wildcards in a least-privilege policy"
    assert granted == needed, f"unused: {sorted(granted - needed)}"


def test_every_mutating_action_is_scoped_by_resource_and_tag() -> None:
    for action, st in _policy_actions():
        if action.split(":")[1].startswith(("Describe", "List", "Get")):
            continue
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        assert "*" not in resources, f"{action} may touch any resource"
        if action.startswith(("rds:", "elasticache:", "fis:")):
            condition = json.dumps(st.get("Condition", {}))
            assert "aws:ResourceTag/" in condition or "aws:RequestTag/" in condition, (
                f"{action} has no tag condition"
            )
    deletes = [st for a, st in _policy_actions() if a == "rds:DeleteDBInstance"]
    assert deletes and all(st["Resource"] == ["arn:aws:rds:*:*:db:firedrill-*"] for st in deletes)
    # The FIS experiment role: passed only to FIS, only a role named for it.
    passes = [st for a, st in _policy_actions() if a == "iam:PassRole"]
    assert passes and all("fis.amazonaws.com" in json.dumps(st.get("Condition", {})) for st in passes)
    assert all(st["Resource"] == ["arn:aws:iam::*:role/firedrill-fis-*"] for st in passes)
    # S3 objects: read, written and deleted only under the drill's own prefix; listed only there.
    for action, st in _policy_actions():
        if (action.startswith("s3:") and "Object" in action) or action == "s3:AbortMultipartUpload":
            assert st["Resource"] == ["arn:aws:s3:::*/firedrill-drill/*"], action
        if action == "s3:ListBucketVersions":
            assert "firedrill-drill/*" in json.dumps(st["Condition"]["StringLike"]["s3:prefix"])


def test_the_scanner_maps_ambiguous_names_by_receiver(tmp_path: Path) -> None:
    code = tmp_path / "sample.py"
    code.write_text(
        "def f(session):\n"
        "    ec = session.elasticache()\n"
        "    ec.describe_events()\n"
        "    session.rds().describe_events()\n"
        "    session.rds().get_paginator('describe_db_instances')\n"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert scan([code]) == {"elasticache:DescribeEvents", "rds:DescribeEvents", "rds:DescribeDBInstances"}
    finally:
        ROOT = saved
