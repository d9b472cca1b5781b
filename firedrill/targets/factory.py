"""Pick the adapter for a store kind and a profile; say which exist when none fits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from firedrill.config import Profile
from firedrill.errors import ConfigError
from firedrill.targets.base import FailoverTarget
from firedrill.targets.restore_base import RestoreTarget, register_restore_adapter

Opener = Callable[[Profile], AbstractContextManager[FailoverTarget]]


@contextmanager
def _local_postgres(profile: Profile) -> Iterator[FailoverTarget]:
    from firedrill.staging.postgres import PgStaging, PgStagingConfig
    from firedrill.targets.local_postgres import LocalPostgresTarget

    with PgStaging(PgStagingConfig(sync_replication=profile.sync_replication)) as staging:
        yield LocalPostgresTarget(staging)


@contextmanager
def _local_redis(profile: Profile) -> Iterator[FailoverTarget]:
    from firedrill.targets.local_redis import open_local_redis

    with open_local_redis() as target:
        yield target


ADAPTERS: dict[tuple[str, str], Opener] = {
    ("postgres", "local"): _local_postgres,
    ("redis", "local"): _local_redis,
}


def register(store: str, kind: str, opener: Opener) -> None:
    ADAPTERS[(store, kind)] = opener


def open_target(store: str, profile: Profile) -> AbstractContextManager[FailoverTarget]:
    opener = ADAPTERS.get((store, profile.kind))
    if opener is None:
        known = ", ".join(f"{s}@{k}" for s, k in sorted(ADAPTERS))
        raise ConfigError(f"no {store} adapter for a '{profile.kind}' environment (available: {known})")
    return opener(profile)


@contextmanager
def _aws_rds(profile: Profile) -> Iterator[FailoverTarget]:
    from firedrill.targets.aws_rds import open_rds_target

    with open_rds_target(profile) as target:
        yield target


@contextmanager
def _aws_elasticache(profile: Profile) -> Iterator[FailoverTarget]:
    from firedrill.targets.aws_elasticache import open_elasticache_target

    with open_elasticache_target(profile) as target:
        yield target


register("postgres", "aws", _aws_rds)
register("redis", "aws", _aws_elasticache)


@contextmanager
def _aws_rds_restore(profile: Profile) -> Iterator[RestoreTarget]:
    from firedrill.targets.aws_rds_restore import open_rds_restore

    with open_rds_restore(profile) as target:
        yield target


register_restore_adapter("aws", _aws_rds_restore)
