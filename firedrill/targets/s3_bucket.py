"""BucketTarget over S3, through boto3: the same code for the local moto staging and for an AWS bucket.

Every S3 call of the drill is here, each inside `aws_call("s3:...", where)`, so a botocore error leaves
this module as a TargetError naming the call and the key. What the drill may change is held to the
drill's own prefix, `<prefix>/firedrill-drill/<run id>/`:

- `claim_prefix` refuses a prefix that already holds anything, so everything in it afterwards was
  written by this run;
- every write, delete and copy refuses a key outside a claimed prefix (GuardrailError);
- `delete_prefix` deletes every version and delete marker under a claimed prefix, in batches, and
  goes on through a Ctrl-C (which it raises again at the end); `close()` does it for every prefix
  still claimed.

On AWS, `connect_s3_bucket` runs the guardrails first: the caller's account must be allowed, and the
bucket must carry the non-production tag (GetBucketTagging; production values are refused).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from botocore.config import Config

from firedrill.aws.errors import aws_call
from firedrill.aws.guardrails import Identity, check_account, check_tags, tag_dict
from firedrill.aws.session import AwsSession, aws_settings
from firedrill.config import S3_RETENTION_DAYS, AwsSettings, Profile, S3Settings
from firedrill.errors import ConfigError, GuardrailError, HarnessError, TargetError
from firedrill.evidence import Node
from firedrill.object_versions import ObjectVersion, ObservedObject
from firedrill.staging.s3 import S3Staging
from firedrill.targets.base import Change, TargetDescription
from firedrill.targets.s3_base import (
    DRILL_DIR,
    BucketFacts,
    CleanupResult,
    WriteAck,
    drill_prefix,
    parse_lifecycle,
    parse_replication,
    replication_check,
    retention_check,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

BATCH = 1000  # DeleteObjects takes at most 1000 keys
READ_CHUNK = 1 << 20
CLEANUP_PASSES = 3
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # one path segment, never ".."


def _code(exc: TargetError) -> str:
    return exc.code or ""


class S3BucketTarget:
    """Implements firedrill.targets.s3_base.BucketTarget for one bucket."""

    def __init__(
        self,
        client: S3Client,
        *,
        bucket: str,
        prefix: str,
        retention_days: int,
        replication_expected: bool,
        environment_kind: str,
        server: str,
        endpoint: str,
        identity: Identity,
        guard: str,
        poll_delay_s: float = 1.0,
        extra_settings: dict[str, str] | None = None,
    ) -> None:
        self.s3 = client  # public, so a test can put a botocore Stubber on exactly this client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.retention_days = retention_days
        self.replication_expected = replication_expected
        self.identity = identity
        self.guardrail = guard
        self.label = f"S3 bucket {bucket}"
        self._environment_kind = environment_kind
        self._server = server
        self._endpoint = endpoint
        self._poll_delay_s = poll_delay_s
        self._extra = extra_settings or {}
        self._claimed: list[str] = []

    def _where(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    # ---- description ---------------------------------------------------------------------------
    def describe(self) -> TargetDescription:
        return TargetDescription(
            kind="s3",
            environment_kind=self._environment_kind,
            servers={"s3": self._server},
            nodes=(Node(name=self.bucket, role="backup bucket", address=self._endpoint),),
            settings={
                "bucket": self.bucket,
                "prefix": self.prefix or "(bucket root)",
                "drill_prefix": drill_prefix(self.prefix, "<run id>"),
                "retention_promise_days": str(self.retention_days),
                "replication": "expected" if self.replication_expected else "not expected (profile)",
                "checksums": "SHA-256 of each object's bytes, computed by firedrill (ETags are not used)",
                "guardrail": self.guardrail,
                **self._extra,
            },
        )

    # ---- the drill's prefix --------------------------------------------------------------------
    def claim_prefix(self, run_id: str) -> str:
        if not _RUN_ID.fullmatch(run_id):
            raise GuardrailError(f"refused: run id {run_id!r} cannot name a prefix; nothing was changed")
        prefix = drill_prefix(self.prefix, run_id)
        with aws_call("s3:ListObjectVersions", self._where(prefix)):
            page = self.s3.list_object_versions(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        if page.get("Versions") or page.get("DeleteMarkers"):
            raise GuardrailError(
                f"refused: {self._where(prefix)} already holds objects; the drill writes only into a new, "
                "empty prefix of its own; nothing was changed"
            )
        if prefix not in self._claimed:
            self._claimed.append(prefix)
        return prefix

    def _guard(self, key: str) -> None:
        if not any(key.startswith(p) for p in self._claimed):
            raise GuardrailError(
                f"refused: {self._where(key)} is outside the drill's own prefix "
                f"({', '.join(self._claimed) or 'none claimed'}); nothing was changed"
            )

    # ---- what the bucket promises --------------------------------------------------------------
    def facts(self) -> BucketFacts:
        with aws_call("s3:GetBucketVersioning", self._where()):
            versioning = str(self.s3.get_bucket_versioning(Bucket=self.bucket).get("Status", ""))
        try:
            with aws_call("s3:GetBucketLifecycleConfiguration", self._where()):
                rules: list[Any] = list(
                    self.s3.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
                )
        except TargetError as exc:
            if _code(exc) != "NoSuchLifecycleConfiguration":
                raise
            rules = []
        try:
            with aws_call("s3:GetBucketReplication", self._where()):
                config: Any = self.s3.get_bucket_replication(Bucket=self.bucket).get(
                    "ReplicationConfiguration"
                )
            replication = parse_replication(config)
        except TargetError as exc:
            if _code(exc) != "ReplicationConfigurationNotFoundError":
                raise
            replication = None
        return BucketFacts(versioning=versioning, lifecycle=parse_lifecycle(rules), replication=replication)

    def replication_status(self, key: str, *, timeout_s: float) -> str | None:
        self._guard(key)
        with aws_call("s3:PutObject", self._where(key)):
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=b"firedrill replication probe\n")
        deadline = time.monotonic() + timeout_s
        status: str | None = None
        while True:
            with aws_call("s3:HeadObject", self._where(key)):
                status = self.s3.head_object(Bucket=self.bucket, Key=key).get("ReplicationStatus")
            if status in ("COMPLETED", "FAILED") or time.monotonic() >= deadline:
                return status
            time.sleep(min(self._poll_delay_s, max(0.0, deadline - time.monotonic())))

    # ---- reading -------------------------------------------------------------------------------
    def list_versions(self, prefix: str) -> list[ObjectVersion]:
        rows: list[ObjectVersion] = []
        paginator = self.s3.get_paginator("list_object_versions")
        with aws_call("s3:ListObjectVersions", self._where(prefix)):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for v in page.get("Versions", []):
                    rows.append(
                        ObjectVersion(
                            key=v["Key"],
                            version_id=v.get("VersionId", "null"),
                            last_modified=v["LastModified"].timestamp(),
                            is_latest=bool(v.get("IsLatest")),
                            size=int(v.get("Size", 0)),
                            etag=str(v.get("ETag", "")).strip('"'),
                        )
                    )
                for m in page.get("DeleteMarkers", []):
                    rows.append(
                        ObjectVersion(
                            key=m["Key"],
                            version_id=m.get("VersionId", "null"),
                            last_modified=m["LastModified"].timestamp(),
                            is_latest=bool(m.get("IsLatest")),
                            delete_marker=True,
                        )
                    )
        stray = [r.key for r in rows if not r.key.startswith(prefix)]
        if stray:
            raise TargetError(f"listing {self._where(prefix)} returned keys outside it: {stray[:3]}")
        return rows

    def read(self, key: str) -> ObservedObject:
        digest = hashlib.sha256()
        size = 0
        with aws_call("s3:GetObject", self._where(key)):
            got = self.s3.get_object(Bucket=self.bucket, Key=key)
            body = got["Body"]
            for chunk in iter(lambda: body.read(READ_CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
        return ObservedObject(key, digest.hexdigest(), size, str(got.get("VersionId", "null")))

    # ---- writing -------------------------------------------------------------------------------
    def put(self, key: str, body: bytes, *, part_size: int | None) -> WriteAck:
        self._guard(key)
        if part_size is None or len(body) <= part_size:
            with aws_call("s3:PutObject", self._where(key)):
                got = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
            return WriteAck(key, str(got.get("VersionId", "null")), time.time(), 1, str(got.get("ETag", "")))
        spans = [(a, min(a + part_size, len(body))) for a in range(0, len(body), part_size)]

        def part(upload_id: str, number: int, first: int, end: int) -> str:
            with aws_call("s3:UploadPart", f"{self._where(key)} part {number}"):
                got = self.s3.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body[first:end]
                )
            return str(got["ETag"])

        return self._multipart(key, [partial(part, first=a, end=b) for a, b in spans])

    def _multipart(self, key: str, parts: Sequence[Callable[..., str]]) -> WriteAck:
        """Create an upload, send each part (`part(upload_id, number)` returns its ETag), complete it;
        abort the upload on any failure or Ctrl-C."""
        with aws_call("s3:CreateMultipartUpload", self._where(key)):
            upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        try:
            done: list[Any] = [
                {"ETag": send(upload_id, number), "PartNumber": number}
                for number, send in enumerate(parts, 1)
            ]
            with aws_call("s3:CompleteMultipartUpload", self._where(key)):
                got = self.s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
                )
        except BaseException:
            with contextlib.suppress(HarnessError), aws_call("s3:AbortMultipartUpload", self._where(key)):
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return WriteAck(
            key, str(got.get("VersionId", "null")), time.time(), len(parts), str(got.get("ETag", ""))
        )

    def delete(self, keys: Sequence[str]) -> list[WriteAck]:
        for key in keys:
            self._guard(key)
        acks: list[WriteAck] = []
        for start in range(0, len(keys), BATCH):
            batch = list(keys[start : start + BATCH])
            with aws_call("s3:DeleteObjects", self._where(batch[0])):
                got = self.s3.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": False}
                )
            self._raise_errors(got)
            when = time.time()
            acks += [
                WriteAck(str(d["Key"]), str(d.get("DeleteMarkerVersionId", "")), when, delete_marker=True)
                for d in got.get("Deleted", [])
            ]
        return acks

    def remove_versions(self, rows: Sequence[tuple[str, str]]) -> int:
        for key, _ in rows:
            self._guard(key)
        removed = 0
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            with aws_call("s3:DeleteObjects", f"{self._where(batch[0][0])} (+{len(batch) - 1} versions)"):
                got = self.s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k, "VersionId": v} for k, v in batch], "Quiet": True},
                )
            self._raise_errors(got)
            removed += len(batch)
        return removed

    def _raise_errors(self, response: Any) -> None:
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise TargetError(
                f"s3:DeleteObjects on {self._where(str(first.get('Key', '')))} failed for {len(errors)} "
                f"key(s): {first.get('Message', '')} ({first.get('Code', '?')})",
                code=str(first.get("Code", "")) or None,
            )

    def copy_version(self, version: ObjectVersion, *, part_size: int | None) -> WriteAck:
        key = version.key
        self._guard(key)
        source = {"Bucket": self.bucket, "Key": key, "VersionId": version.version_id}
        if part_size is None or version.size <= part_size:
            with aws_call("s3:CopyObject", f"{self._where(key)} from version {version.version_id}"):
                got = self.s3.copy_object(Bucket=self.bucket, Key=key, CopySource=source)  # type: ignore[arg-type]
            etag = str(got.get("CopyObjectResult", {}).get("ETag", ""))
            return WriteAck(key, str(got.get("VersionId", "null")), time.time(), 1, etag)
        spans = [(a, min(a + part_size, version.size) - 1) for a in range(0, version.size, part_size)]

        def part(upload_id: str, number: int, first: int, last: int) -> str:
            with aws_call("s3:UploadPartCopy", f"{self._where(key)} part {number}"):
                got = self.s3.upload_part_copy(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,  # type: ignore[arg-type]
                    CopySourceRange=f"bytes={first}-{last}",
                )
            return str(got["CopyPartResult"]["ETag"])

        return self._multipart(key, [partial(part, first=a, last=b) for a, b in spans])

    # ---- cleanup -------------------------------------------------------------------------------
    def delete_prefix(self, prefix: str) -> CleanupResult:
        if prefix not in self._claimed or f"/{DRILL_DIR}/" not in f"/{prefix}":
            raise GuardrailError(f"refused: {self._where(prefix)} is not a prefix this drill claimed")
        versions = markers = 0
        interrupted = False
        rows: list[ObjectVersion] | None = None
        for _ in range(CLEANUP_PASSES + 1):
            try:
                rows = self.list_versions(prefix)
                if not rows:
                    break
                self.remove_versions([(r.key, r.version_id) for r in rows])
                versions += sum(1 for r in rows if not r.delete_marker)
                markers += sum(1 for r in rows if r.delete_marker)
                rows = None
            except KeyboardInterrupt:  # the prefix goes anyway; the caller raises it afterwards
                interrupted = True
        left = 0 if rows == [] else len(self.list_versions(prefix))
        if not left:
            self._claimed.remove(prefix)
        detail = f"{versions} versions and {markers} delete markers deleted under {self._where(prefix)}"
        if left:
            detail += f"; {left} still listed"
        if interrupted:
            detail += " (a Ctrl-C came during it; the deletion went on)"
        log.info("%s", detail)
        return CleanupResult(prefix, versions, markers, left, detail, interrupted)

    def claimed(self) -> list[str]:
        return list(self._claimed)

    def close(self) -> None:
        """Delete every claimed prefix that is still there (a drill that stopped early); a Ctrl-C
        during that is raised once every prefix was dealt with."""
        interrupted = False
        for prefix in list(self._claimed):
            try:
                interrupted = self.delete_prefix(prefix).interrupted or interrupted
            except HarnessError as exc:
                log.error("drill prefix %s NOT deleted: %s", self._where(prefix), exc)
        if interrupted:
            raise KeyboardInterrupt

    # ---- plan ----------------------------------------------------------------------------------
    def plan_checks(self) -> list[str]:
        """The readiness checks a drill runs first, from the bucket's configuration (read-only)."""
        facts = self.facts()
        probe = drill_prefix(self.prefix, "<run id>")
        lines = [_line("versioning is enabled", facts.versioning == "Enabled", f"Status={facts.versioning}")]
        ok, detail = retention_check(facts.lifecycle, probe, self.retention_days)
        lines.append(_line(f"noncurrent versions kept {self.retention_days} days", ok, detail))
        if self.replication_expected:
            ok, detail = replication_check(facts.replication, probe, "PENDING")
            lines.append(_line("replication configured", ok, detail.split("; probe")[0]))
        return lines

    def plan(self, *, rate_hz: float) -> list[Change]:
        """What an S3 restore drill would change (for `firedrill plan`); reads state only."""
        where = self._where(drill_prefix(self.prefix, "<run id>"))
        data = f"{where}data/"
        changes = [
            Change("aws", "s3:PutObject", data, "each scenario's objects; multipart above the part size")
        ]
        if self.replication_expected:
            probe = f"{where}probe/replication"
            changes += [
                Change("aws", "s3:PutObject", probe, "one small probe object"),
                Change(
                    "wait", "poll HeadObject", probe, f"its ReplicationStatus, every {self._poll_delay_s:g} s"
                ),
            ]
        return [
            *changes,
            Change(
                "aws", "s3:DeleteObjects / s3:PutObject", data, "the disaster, on the drill's own objects"
            ),
            Change(
                "aws", "s3:DeleteObjectVersion", data, "restore: remove the delete markers the disaster made"
            ),
            Change(
                "aws", "s3:CopyObject / s3:UploadPartCopy", data, "restore: copy overwritten versions back"
            ),
            Change("aws", "s3:DeleteObject", data, "restore: hide keys written after the restore point"),
            Change(
                "aws",
                "s3:DeleteObjectVersion",
                where,
                "every version and delete marker; always, on failure too",
            ),
        ]


def _line(name: str, passed: bool, detail: str) -> str:
    return f"{'ok ' if passed else 'NOT'} {name}: {detail}"


# ---- opening -------------------------------------------------------------------------------------
@dataclass
class S3Environment:
    """The buckets of a drill environment: the backup bucket, and (local staging only) a bucket
    without versioning for the refusal scenario."""

    backup: S3BucketTarget
    unversioned: S3BucketTarget | None = None
    staging: S3Staging | None = None

    def close(self) -> None:
        for target in (self.backup, self.unversioned):
            if target is not None:
                target.close()


def client_config(settings: AwsSettings) -> Config:
    """The same retry and timeout policy as every other client of the profile (firedrill.aws.session)."""
    return Config(
        region_name=settings.region,
        retries={"mode": "standard", "max_attempts": settings.max_retries + 1},
        connect_timeout=5,
        read_timeout=60,
        user_agent_extra="firedrill",
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
    )


def s3_settings(settings: AwsSettings) -> S3Settings:
    if settings.s3 is None:
        raise ConfigError("the profile's aws section has no [s3] part (bucket, prefix, retention_days)")
    return settings.s3


def connect_s3_bucket(session: AwsSession) -> S3BucketTarget:
    """Guardrails first (the account, then the bucket's non-production tag), then the adapter."""
    s3cfg = s3_settings(session.settings)
    identity = check_account(session)
    client: S3Client = session.boto_session.client(
        "s3", config=client_config(session.settings), endpoint_url=session.settings.endpoint_url
    )
    where = f"s3://{s3cfg.bucket}"
    try:
        with aws_call("s3:GetBucketTagging", where):
            tags = tag_dict(client.get_bucket_tagging(Bucket=s3cfg.bucket).get("TagSet"))
    except TargetError as exc:
        if _code(exc) != "NoSuchTagSet":
            raise
        tags = {}
    guard = check_tags(session.settings, f"S3 bucket {s3cfg.bucket}", tags)
    s = session.settings
    return S3BucketTarget(
        client,
        bucket=s3cfg.bucket,
        prefix=s3cfg.prefix,
        retention_days=s3cfg.retention_days,
        replication_expected=s3cfg.replication,
        environment_kind="aws",
        server="Amazon S3" if s.endpoint_url is None else f"S3 API at {s.endpoint_url}",
        endpoint=s.endpoint_url or f"s3.{s.region}.amazonaws.com",
        identity=identity,
        guard=guard,
        poll_delay_s=s.poll_delay_s,
        extra_settings={"region": s.region, "account": identity.account, "caller": identity.arn},
    )


def _local_target(staging: S3Staging, bucket: str) -> S3BucketTarget:
    return S3BucketTarget(
        staging.client(),
        bucket=bucket,
        prefix=staging.prefix,
        retention_days=S3_RETENTION_DAYS,
        replication_expected=False,
        environment_kind="local-staging",
        server=staging.server_version,
        endpoint=staging.endpoint_url,
        identity=Identity(account="local", arn="local staging (no AWS account)"),
        guard="local staging: a moto S3 server on loopback, torn down after the drill",
        poll_delay_s=0.1,
        extra_settings={
            "lifecycle": f"noncurrent versions of {staging.prefix}/ expire after "
            f"{staging.config.noncurrent_days} days"
        },
    )


@contextmanager
def open_s3_environment(profile: Profile) -> Iterator[S3Environment]:
    """The local staging's buckets, or the AWS profile's bucket (guardrails run); drill prefixes left
    behind are deleted when it closes."""
    if profile.kind == "local":
        with S3Staging() as staging:
            env = S3Environment(
                backup=_local_target(staging, staging.backup_bucket),
                unversioned=_local_target(staging, staging.unversioned_bucket),
                staging=staging,
            )
            try:
                yield env
            finally:
                env.close()
        return
    env = S3Environment(backup=connect_s3_bucket(AwsSession(aws_settings(profile))))
    try:
        yield env
    finally:
        env.close()


def plan_target(session: AwsSession) -> S3BucketTarget:
    """The bucket opened for `firedrill plan`: guardrails run, nothing is written."""
    return connect_s3_bucket(session)
