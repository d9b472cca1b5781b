"""Archive a ledger to S3 with Object Lock in compliance mode: the ledger's anchor outside this host.

Keys under `<prefix>/`:

    000001-<run_id>.json, 000001-<run_id>.sig, ...   every record and signature, once
    HEAD/000005.json                                 the ledger's HEAD when it reached record 5

Each object is written once with `ObjectLockMode=COMPLIANCE`, a retain-until date `retention_days` ahead
and its SHA-256 checksum (S3 rejects the upload if the bytes differ). In compliance mode nobody, the root
account included, can delete or overwrite a locked version before that date. What the archive adds to
`firedrill.audit.ledger.verify`:

- files already archived are compared (by SHA-256) with the local ones: a local record changed after it
  was archived is refused, even when its whole chain and HEAD were rebuilt;
- a local ledger shorter than the archive (fewer records, or a HEAD snapshot further than the local HEAD)
  is refused: that is the rollback no local check can see.

The bucket must have Object Lock enabled (only possible at creation, or by AWS support): without it the
retention parameters would be rejected or, worse, the archive would be deletable, so it is refused.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from firedrill.audit import ledger
from firedrill.audit.signing import PublicKeyLike
from firedrill.errors import ConfigError, GuardrailError, TargetError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_HEAD_KEY_RE = re.compile(r"^HEAD/(\d{6,})\.json$")
_RECORD_KEY_RE = re.compile(r"^(\d{6,})-.+\.(json|sig)$")


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    bucket: str
    prefix: str
    retain_until: datetime
    uploaded: list[str] = field(default_factory=list)  # keys written by this call
    already_archived: list[str] = field(default_factory=list)  # keys present and identical

    def summary(self) -> str:
        return (
            f"archived {len(self.uploaded)} new object(s) to s3://{self.bucket}/{self.prefix} "
            f"(locked until {self.retain_until:%Y-%m-%d}), {len(self.already_archived)} already there"
        )


def archive_ledger(
    ledger_dir: Path,
    bucket: str,
    prefix: str,
    retention_days: int,
    s3_client: S3Client,
    *,
    public_key: PublicKeyLike | None = None,
    now: datetime | None = None,
) -> ArchiveResult:
    """Upload every not-yet-archived ledger file (and the current HEAD snapshot) with Object Lock.

    Refuses (GuardrailError, one line): a bucket without Object Lock, a ledger that does not verify
    (with `public_key` if given), an archived file whose bytes differ from the local one, a local ledger
    behind its archive. botocore errors become TargetError with the S3 error code kept.
    """
    ledger_dir = Path(ledger_dir)
    if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1:
        raise ConfigError(
            f"archive retention_days must be a whole number of days >= 1, not {retention_days!r}"
        )
    if not bucket:
        raise ConfigError("archive bucket is empty")
    prefix = prefix.strip("/")
    _require_object_lock(s3_client, bucket)

    result = ledger.verify(ledger_dir, public_key)
    if not result.ok:
        reason = result.first_break.reason if result.first_break else "unknown"
        raise GuardrailError(f"ledger {ledger_dir} does not verify, refusing to archive it: {reason}")
    head = ledger.read_head(ledger_dir)
    if head is None:
        return ArchiveResult(bucket, prefix, _retain_until(now, retention_days))

    local: dict[str, bytes] = {p.name: p.read_bytes() for p in ledger.ledger_files(ledger_dir)}
    head_key = f"HEAD/{head.seq:06d}.json"
    local[head_key] = (ledger_dir / ledger.HEAD_NAME).read_bytes()

    archived = _list_keys(s3_client, bucket, prefix)
    _refuse_rollback(archived, local, head.seq, bucket, prefix)

    retain_until = _retain_until(now, retention_days)
    uploaded: list[str] = []
    already: list[str] = []
    to_upload: list[str] = []
    for rel in sorted(local, key=_upload_order):
        key = _join(prefix, rel)
        if key in archived:
            remote = _remote_sha256(s3_client, bucket, key)
            if remote != _b64sha(local[rel]):
                raise GuardrailError(
                    f"s3://{bucket}/{key} differs from the local {rel}: "
                    "the local ledger changed after it was archived; refusing to archive"
                )
            already.append(key)
        else:
            to_upload.append(rel)
    for rel in to_upload:  # records and signatures first, the HEAD snapshot last
        key = _join(prefix, rel)
        body = local[rel]
        try:
            s3_client.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ContentType="application/json" if rel.endswith(".json") else "text/plain",
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64sha(body),
                ObjectLockMode="COMPLIANCE",
                ObjectLockRetainUntilDate=retain_until,
                Metadata={"firedrill-sha256": hashlib.sha256(body).hexdigest()},
            )
        except (ClientError, BotoCoreError) as exc:
            raise _target_error("PutObject", bucket, key, exc) from exc
        uploaded.append(key)
    return ArchiveResult(bucket, prefix, retain_until, uploaded, already)


def _require_object_lock(s3: S3Client, bucket: str) -> None:
    try:
        conf = s3.get_object_lock_configuration(Bucket=bucket)
    except ClientError as exc:
        if _code(exc) == "ObjectLockConfigurationNotFoundError":
            raise GuardrailError(
                f"bucket {bucket} does not have Object Lock enabled: refusing to archive evidence "
                "that could be deleted"
            ) from exc
        raise _target_error("GetObjectLockConfiguration", bucket, "", exc) from exc
    except BotoCoreError as exc:
        raise _target_error("GetObjectLockConfiguration", bucket, "", exc) from exc
    if conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
        raise GuardrailError(f"bucket {bucket} does not have Object Lock enabled: refusing to archive")


def _list_keys(s3: S3Client, bucket: str, prefix: str) -> set[str]:
    keys: set[str] = set()
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=_join(prefix, "")):
            keys.update(obj["Key"] for obj in page.get("Contents", []) if "Key" in obj)
    except (ClientError, BotoCoreError) as exc:
        raise _target_error("ListObjectsV2", bucket, prefix, exc) from exc
    return keys


def _refuse_rollback(
    archived: set[str], local: dict[str, bytes], head_seq: int, bucket: str, prefix: str
) -> None:
    start = len(_join(prefix, ""))
    for key in sorted(archived):
        rel = key[start:]
        m = _HEAD_KEY_RE.match(rel)
        if m and int(m.group(1)) > head_seq:
            raise GuardrailError(
                f"s3://{bucket}/{key} shows the ledger reached record {int(m.group(1))}, the local ledger "
                f"ends at record {head_seq}: records were removed (rollback); refusing to archive"
            )
        m = _RECORD_KEY_RE.match(rel)
        if m and rel not in local:
            raise GuardrailError(
                f"s3://{bucket}/{key} is archived but missing from the local ledger: "
                "records were removed or renamed; refusing to archive"
            )


def _remote_sha256(s3: S3Client, bucket: str, key: str) -> str:
    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        if head.get("ChecksumSHA256") and "-" not in head["ChecksumSHA256"]:
            return head["ChecksumSHA256"]
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        raise _target_error("HeadObject", bucket, key, exc) from exc
    return _b64sha(body)


def _upload_order(rel: str) -> tuple[int, str]:
    return (1 if rel.startswith("HEAD/") else 0, rel)


def _retain_until(now: datetime | None, days: int) -> datetime:
    base = now if now is not None else datetime.now(UTC)
    if base.tzinfo is None:
        base = base.replace(tzinfo=UTC)
    return (base + timedelta(days=days)).replace(microsecond=0)


def _b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "") or "")


def _target_error(op: str, bucket: str, key: str, exc: ClientError | BotoCoreError) -> TargetError:
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(exc, ClientError):
        code = _code(exc) or "ClientError"
        message = str(exc.response.get("Error", {}).get("Message", "")).splitlines()
        text = message[0] if message else code
        return TargetError(f"S3 {op} {where}: {code}: {text}", code=code)
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return TargetError(f"S3 {op} {where}: {first}", code=type(exc).__name__)
