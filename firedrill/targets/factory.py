"""Pick the adapter a drill talks to, for a store and an environment kind; say which exist when none fits.

One registry for every drill kind: failover targets by (store, kind), point-in-time restore targets by
environment kind. Another package (or a test) adds or swaps an adapter with `register` /
`register_restore_adapter`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from firedrill.config import Profile
from firedrill.errors import ConfigError
from firedrill.staging.postgres import PgStaging, PgStagingConfig
from firedrill.targets.aws_elasticache import open_elasticache_target
from firedrill.targets.aws_rds import open_rds_target
from firedrill.targets.aws_rds_restore import open_rds_restore
from firedrill.targets.base import FailoverTarget
from firedrill.targets.local_pitr import open_local_pitr
from firedrill.targets.local_postgres import LocalPostgresTarget
from firedrill.targets.local_redis import open_local_redis
from firedrill.targets.restore_base import RestoreTarget
from firedrill.targets.s3_bucket import S3Environment, open_s3_environment

Opener = Callable[[Profile], AbstractContextManager[FailoverTarget]]
RestoreOpener = Callable[[Profile], AbstractContextManager[RestoreTarget]]


@contextmanager
def _local_postgres(profile: Profile) -> Iterator[FailoverTarget]:
    with PgStaging(PgStagingConfig(sync_replication=profile.sync_replication)) as staging:
        yield LocalPostgresTarget(staging)


@contextmanager
def _local_redis(profile: Profile) -> Iterator[FailoverTarget]:
    with open_local_redis() as target:
        yield target


# Failover targets, by (store, environment kind).
ADAPTERS: dict[tuple[str, str], Opener] = {
    ("postgres", "local"): _local_postgres,
    ("redis", "local"): _local_redis,
    ("postgres", "aws"): open_rds_target,
    ("redis", "aws"): open_elasticache_target,
}

# Point-in-time restore targets (PostgreSQL with a WAL archive), by environment kind.
RESTORE_ADAPTERS: dict[str, RestoreOpener] = {
    "local": open_local_pitr,
    "aws": open_rds_restore,
}


def register(store: str, kind: str, opener: Opener) -> None:
    ADAPTERS[(store, kind)] = opener


def register_restore_adapter(kind: str, opener: RestoreOpener) -> None:
    RESTORE_ADAPTERS[kind] = opener


def open_target(store: str, profile: Profile) -> AbstractContextManager[FailoverTarget]:
    opener = ADAPTERS.get((store, profile.kind))
    if opener is None:
        known = ", ".join(f"{s}@{k}" for s, k in sorted(ADAPTERS))
        raise ConfigError(f"no {store} adapter for a '{profile.kind}' environment (available: {known})")
    return opener(profile)


def open_restore_target(profile: Profile) -> AbstractContextManager[RestoreTarget]:
    opener = RESTORE_ADAPTERS.get(profile.kind)
    if opener is None:
        known = ", ".join(sorted(RESTORE_ADAPTERS))
        raise ConfigError(
            f"no point-in-time restore adapter for a '{profile.kind}' environment (available: {known})"
        )
    return opener(profile)


# Backup buckets (store "s3", the S3 restore drill), by environment kind: one adapter for both.
BUCKET_ADAPTERS: dict[str, Callable[[Profile], AbstractContextManager[S3Environment]]] = {
    "local": open_s3_environment,  # moto's S3 in server mode, on loopback
    "aws": open_s3_environment,  # the profile's [aws.s3] bucket, after its guardrails
}


def open_bucket_target(profile: Profile) -> AbstractContextManager[S3Environment]:
    opener = BUCKET_ADAPTERS.get(profile.kind)
    if opener is None:
        known = ", ".join(sorted(BUCKET_ADAPTERS))
        raise ConfigError(f"no s3 adapter for a '{profile.kind}' environment (available: {known})")
    return opener(profile)
