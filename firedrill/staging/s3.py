"""The local S3 of the embedded staging: moto's S3 in server mode, a real S3-compatible HTTP server on a
free loopback port, inside this process.

It holds three things, created when the staging starts:

- a versioned backup bucket tagged `environment=staging`, with lifecycle rules like the platform's:
  noncurrent versions of `backups/` expire after 35 days, incomplete multipart uploads after a day;
- a few platform backup objects under `backups/platform/` (two versions each) that no drill may touch;
- a bucket without versioning, for the scenario in which the drill must refuse a bucket.

Nothing is written to disk by the staging itself and nothing listens beyond 127.0.0.1. `stop()` deletes
every version in its buckets and the buckets, then shuts the server down; it is tracked so that an
interpreter exit that skipped teardown still stops it. Credentials are static fake ones, never the
caller's AWS credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from moto.server import ThreadedMotoServer

from firedrill.errors import StagingError
from firedrill.staging.common import RESERVED_PORTS, track, untrack

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

REGION = "us-east-1"
# Fake, static credentials: the local server accepts anything, and the caller's real ones stay unused.
ACCESS_KEY = "firedrill-local"
SECRET_KEY = "firedrill-local-staging"
TAGS: list[Any] = [{"Key": "environment", "Value": "staging"}]
PREFIX = "backups"
NONCURRENT_DAYS = 35
PLATFORM_OBJECTS = ("db-2026-11-30.dump", "db-2026-12-01.dump", "wal-archive.tar")


@dataclass(frozen=True, slots=True)
class S3StagingConfig:
    prefix: str = PREFIX
    noncurrent_days: int = NONCURRENT_DAYS
    seed_bytes: int = 64 * 1024  # size of each platform object outside the drill prefix


def client_for(endpoint_url: str) -> S3Client:
    """An S3 client for the local server: fake credentials, path-style addressing, few retries."""
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    )
    config = Config(
        region_name=REGION,
        retries={"mode": "standard", "max_attempts": 2},
        connect_timeout=5,
        read_timeout=30,
        s3={"addressing_style": "path"},
        user_agent_extra="firedrill",
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


@dataclass(eq=False)
class S3Staging:
    config: S3StagingConfig = field(default_factory=S3StagingConfig)
    backup_bucket: str = ""
    unversioned_bucket: str = ""
    endpoint_url: str = ""
    platform_keys: list[str] = field(default_factory=list)
    _server: ThreadedMotoServer | None = None
    _client: S3Client | None = None

    @property
    def prefix(self) -> str:
        return self.config.prefix

    @property
    def server_version(self) -> str:
        return f"moto {dist_version('moto')} (S3, server mode)"

    def client(self) -> S3Client:
        if self._client is None:
            if not self.endpoint_url:
                raise StagingError("the local S3 staging is not started")
            self._client = client_for(self.endpoint_url)
        return self._client

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        token = secrets.token_hex(3)
        self.backup_bucket = f"firedrill-backups-{token}"
        self.unversioned_bucket = f"firedrill-unversioned-{token}"
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()  # port 0: the kernel picks a free ephemeral port, so the bind cannot fail
        self._server = server
        track(self)
        try:
            host, port = server.get_host_and_port()
            if port in RESERVED_PORTS:
                raise StagingError(f"the local S3 server got a reserved port {port}")
            self.endpoint_url = f"http://{host}:{port}"
            self._create()
        except (ClientError, BotoCoreError) as exc:
            self.stop()
            raise StagingError(f"local S3 staging at {self.endpoint_url}: {exc}") from exc
        except BaseException:
            self.stop()
            raise
        log.info(
            "local S3 (moto) at %s: versioned bucket %s, unversioned bucket %s",
            self.endpoint_url,
            self.backup_bucket,
            self.unversioned_bucket,
        )

    def _create(self) -> None:
        s3 = self.client()
        s3.create_bucket(Bucket=self.backup_bucket)
        s3.put_bucket_tagging(Bucket=self.backup_bucket, Tagging={"TagSet": TAGS})
        s3.put_bucket_versioning(Bucket=self.backup_bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_lifecycle_configuration(
            Bucket=self.backup_bucket,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "backups-noncurrent",
                        "Status": "Enabled",
                        "Filter": {"Prefix": f"{self.prefix}/"},
                        "NoncurrentVersionExpiration": {"NoncurrentDays": self.config.noncurrent_days},
                    },
                    {
                        "ID": "abort-incomplete-uploads",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                    },
                ]
            },
        )
        s3.create_bucket(Bucket=self.unversioned_bucket)
        s3.put_bucket_tagging(Bucket=self.unversioned_bucket, Tagging={"TagSet": TAGS})
        self.platform_keys = []
        for name in PLATFORM_OBJECTS:
            key = f"{self.prefix}/platform/{name}"
            for generation in (1, 2):
                body = hashlib.shake_256(f"{key}#{generation}".encode()).digest(self.config.seed_bytes)
                s3.put_object(Bucket=self.backup_bucket, Key=key, Body=body)
            self.platform_keys.append(key)

    def stop(self) -> None:
        """Delete the buckets' contents and the buckets, stop the server. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        untrack(self)
        if self.endpoint_url:
            for bucket in (self.backup_bucket, self.unversioned_bucket):
                with contextlib.suppress(ClientError, BotoCoreError):
                    self._empty(bucket)
        server.stop()
        self._client = None

    def _empty(self, bucket: str) -> None:
        s3 = self.client()
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            rows = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            doomed = [{"Key": r["Key"], "VersionId": r["VersionId"]} for r in rows if "Key" in r]
            if doomed:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})  # type: ignore[typeddict-item]
        s3.delete_bucket(Bucket=bucket)

    def __enter__(self) -> S3Staging:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
