"""Ledger archive to S3 Object Lock (compliance mode), against moto in server mode."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from moto.server import ThreadedMotoServer

from firedrill.audit import ledger
from firedrill.audit.archive_s3 import archive_ledger
from firedrill.audit.signing import Signer
from firedrill.errors import ConfigError, GuardrailError, TargetError
from firedrill.evidence import Environment, EvidenceRecord, Measurements, Operator

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

NOW = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)


def make_record(run_id: str, rto_s: float = 30.0) -> EvidenceRecord:
    return EvidenceRecord(
        run_id=run_id,
        drill="pg-failover",
        scenario="primary killed",
        started_at="2026-11-25T20:00:00+00:00",
        finished_at="2026-11-25T20:03:00+00:00",
        duration_s=180.0,
        environment=Environment(
            name="local",
            kind="local-staging",
            host="ci",
            platform="Linux",
            python="3.11",
            firedrill_version="0.1.0",
            git_revision="abc",
        ),
        operator=Operator(user="ci", host="ci", via="pytest"),
        objectives=[],
        verdicts=[],
        checks=[],
        measurements=Measurements(rto_s=rto_s),
        verdict="passed",
        timeline=[],
        samples=[],
        signoff=[],
        compliance=[],
    )


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(endpoint: str) -> S3Client:
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return client


@pytest.fixture
def locked_bucket(s3: S3Client) -> str:
    name = f"evidence-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


def build_ledger(path: Path, n: int, signer: Signer | None, start: int = 0) -> list[ledger.LedgerEntry]:
    return [ledger.append(path, make_record(f"run-{i:04d}"), signer) for i in range(start, start + n)]


def test_archive_uploads_every_file_locked_in_compliance_mode(
    tmp_path: Path, s3: S3Client, locked_bucket: str, signer: Signer
) -> None:
    d = tmp_path / "ledger"
    build_ledger(d, 3, signer)
    result = archive_ledger(
        d, locked_bucket, "evidence/ledger/", 365, s3, public_key=signer.public_key(), now=NOW
    )
    expected = [f"evidence/ledger/{p.name}" for p in ledger.ledger_files(d)] + [
        "evidence/ledger/HEAD/000003.json"
    ]
    assert result.uploaded == expected
    assert result.already_archived == []
    assert result.retain_until == NOW + timedelta(days=365)
    assert "archived 7 new object(s)" in result.summary()
    listed = s3.list_objects_v2(Bucket=locked_bucket, Prefix="evidence/ledger/")
    assert sorted(o["Key"] for o in listed.get("Contents", [])) == sorted(expected)
    for key in expected:
        head = s3.head_object(Bucket=locked_bucket, Key=key, ChecksumMode="ENABLED")
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"].astimezone(UTC) == NOW + timedelta(days=365)
        rel = key.removeprefix("evidence/ledger/")
        local = (d / ("HEAD" if rel.startswith("HEAD/") else rel)).read_bytes()
        body = s3.get_object(Bucket=locked_bucket, Key=key)["Body"].read()
        assert body == local
        assert head["Metadata"]["firedrill-sha256"] == hashlib.sha256(local).hexdigest()
        assert "ChecksumSHA256" in head
    # Locked: the archived version cannot be deleted.
    first = expected[0]
    version = s3.head_object(Bucket=locked_bucket, Key=first)["VersionId"]
    with pytest.raises(ClientError) as denied:
        s3.delete_object(Bucket=locked_bucket, Key=first, VersionId=version)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def test_archive_is_incremental(tmp_path: Path, s3: S3Client, locked_bucket: str) -> None:
    d = tmp_path / "ledger"
    build_ledger(d, 2, None)
    first = archive_ledger(d, locked_bucket, "l", 30, s3)
    assert len(first.uploaded) == 3  # 2 records + HEAD/000002
    again = archive_ledger(d, locked_bucket, "l", 30, s3)
    assert again.uploaded == [] and sorted(again.already_archived) == sorted(first.uploaded)
    build_ledger(d, 2, None, start=2)
    third = archive_ledger(d, locked_bucket, "l", 30, s3)
    assert third.uploaded == [
        "l/000003-run-0002.json",
        "l/000004-run-0003.json",
        "l/HEAD/000004.json",
    ]


def test_bucket_without_object_lock_is_refused(tmp_path: Path, s3: S3Client) -> None:
    plain = f"plain-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=plain)
    d = tmp_path / "ledger"
    build_ledger(d, 1, None)
    with pytest.raises(GuardrailError, match="does not have Object Lock enabled") as err:
        archive_ledger(d, plain, "l", 365, s3)
    assert "\n" not in str(err.value)
    assert s3.list_objects_v2(Bucket=plain).get("KeyCount", 0) == 0


def test_missing_bucket_is_a_target_error_with_code(tmp_path: Path, s3: S3Client) -> None:
    d = tmp_path / "ledger"
    build_ledger(d, 1, None)
    with pytest.raises(TargetError) as err:
        archive_ledger(d, "no-such-bucket-fd", "l", 365, s3)
    assert err.value.code == "NoSuchBucket"


def test_unreachable_endpoint_is_a_target_error(tmp_path: Path) -> None:
    d = tmp_path / "ledger"
    build_ledger(d, 1, None)
    client: Any = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:1",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1),
    )
    with pytest.raises(TargetError) as err:
        archive_ledger(d, "b", "l", 365, client)
    assert err.value.code == "EndpointConnectionError"


def test_bad_retention_and_broken_ledger_are_refused(
    tmp_path: Path, s3: S3Client, locked_bucket: str
) -> None:
    d = tmp_path / "ledger"
    build_ledger(d, 3, None)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="retention_days"):
            archive_ledger(d, locked_bucket, "l", bad, s3)  # type: ignore[arg-type]
    (d / "000002-run-0001.json").unlink()
    with pytest.raises(GuardrailError, match=r"does not verify.*record 2"):
        archive_ledger(d, locked_bucket, "l", 365, s3)


def rewrite_ledger(d: Path, records: list[EvidenceRecord]) -> None:
    """What a forger with write access does to an unsigned ledger: rebuild it so it verifies again."""
    for p in d.iterdir():
        p.unlink()
    for r in records:
        ledger.append(d, r, None)


def test_local_change_after_archiving_is_caught_even_if_the_chain_was_rebuilt(
    tmp_path: Path, s3: S3Client, locked_bucket: str
) -> None:
    d = tmp_path / "ledger"
    build_ledger(d, 3, None)
    archive_ledger(d, locked_bucket, "l", 365, s3)
    records = list(ledger.iter_records(d))
    records[1] = make_record(records[1].run_id, rto_s=1.0)  # a better RTO than measured
    rewrite_ledger(d, records)
    assert ledger.verify(d).ok  # the local checks cannot see it
    with pytest.raises(GuardrailError, match=r"000002-run-0001\.json differs from the local"):
        archive_ledger(d, locked_bucket, "l", 365, s3)


def test_rollback_behind_the_archive_is_caught(tmp_path: Path, s3: S3Client, locked_bucket: str) -> None:
    d = tmp_path / "ledger"
    build_ledger(d, 4, None)
    archive_ledger(d, locked_bucket, "l", 365, s3)
    records = list(ledger.iter_records(d))[:3]
    rewrite_ledger(d, records)  # drop the last record, HEAD rewritten to match
    assert ledger.verify(d).ok
    with pytest.raises(GuardrailError, match="removed") as err:
        archive_ledger(d, locked_bucket, "l", 365, s3)
    assert "refusing to archive" in str(err.value)
    head = json.loads((d / "HEAD").read_text())
    assert head["seq"] == 3
