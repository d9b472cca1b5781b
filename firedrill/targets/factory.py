"""Pick the adapter a drill talks to, for a store and an environment kind; say which exist when none fits.

One registry for every drill kind: failover targets by (store, kind), point-in-time restore targets by
environment kind. Another package (or a test) adds or swaps an adapter with `register` /
`register_restore_adapter`. A non-AWS adapter may also say what it starts and does, for `firedrill plan`
(`PLANNERS`, `register_planner`), instead of the drill's generic local text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager

from firedrill.config import Profile
from firedrill.errors import ConfigError
from firedrill.staging.postgres import PgStaging
from firedrill.targets.aws_elasticache import open_elasticache_target
from firedrill.targets.aws_rds import open_rds_target
from firedrill.targets.aws_rds_restore import open_rds_restore
from firedrill.targets.base import Change, FailoverTarget
from firedrill.targets.knobs import pg_staging_config, redis_staging_config
from firedrill.targets.local_ha import open_local_ha, plan_local_ha
from firedrill.targets.local_pitr import open_local_pitr
from firedrill.targets.local_postgres import LocalPostgresTarget
from firedrill.targets.local_redis import open_local_redis
from firedrill.targets.patroni_cluster import open_patroni_cluster, plan_patroni
from firedrill.targets.restore_base import RestoreTarget
from firedrill.targets.s3_bucket import S3Environment, open_s3_environment
from firedrill.targets.sentinel_deployment import open_sentinel_deployment, plan_sentinel

Opener = Callable[[Profile], AbstractContextManager[FailoverTarget]]
RestoreOpener = Callable[[Profile], AbstractContextManager[RestoreTarget]]


@contextmanager
def _local_postgres(profile: Profile) -> Iterator[FailoverTarget]:
    with PgStaging(pg_staging_config(profile)) as staging:
        yield LocalPostgresTarget(staging)


@contextmanager
def _local_redis(profile: Profile) -> Iterator[FailoverTarget]:
    with open_local_redis(redis_staging_config(profile)) as target:
        yield target


# Failover targets, by (store, environment kind).
ADAPTERS: dict[tuple[str, str], Opener] = {
    ("postgres", "local"): _local_postgres,
    ("redis", "local"): _local_redis,
    ("postgres", "aws"): open_rds_target,
    ("redis", "aws"): open_elasticache_target,
    ("postgres", "local-ha"): open_local_ha,  # Patroni + etcd + HAProxy, failover by Patroni
    ("postgres", "patroni"): open_patroni_cluster,  # an existing Patroni cluster, by its REST API
    ("redis", "sentinel"): open_sentinel_deployment,  # an existing Redis Sentinel deployment
}

# Point-in-time restore targets (PostgreSQL with a WAL archive), by environment kind.
RESTORE_ADAPTERS: dict[str, RestoreOpener] = {
    "local": open_local_pitr,
    "aws": open_rds_restore,
}


# What an adapter starts, calls and runs, for `firedrill plan`: (checks, changes) from the profile, with
# no change made; by (store, environment kind). Systems someone else runs check their guardrails here
# (read-only calls). AWS adapters plan through the drill's own `aws_plan`.
Planner = Callable[[Profile], tuple[list[str], list[Change]]]
PLANNERS: dict[tuple[str, str], Planner] = {
    ("postgres", "local-ha"): plan_local_ha,
    ("postgres", "patroni"): plan_patroni,
    ("redis", "sentinel"): plan_sentinel,
}


def register(store: str, kind: str, opener: Opener) -> None:
    ADAPTERS[(store, kind)] = opener


def register_planner(store: str, kind: str, planner: Planner) -> None:
    PLANNERS[(store, kind)] = planner


def adapter_planner(stores: Iterable[str], kind: str) -> Planner | None:
    """The planner of the adapter a drill of these stores drives on a `kind` environment, if it has one."""
    return next((PLANNERS[(s, kind)] for s in stores if (s, kind) in PLANNERS), None)


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
