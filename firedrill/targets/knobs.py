"""Staging knobs: how a profile's replication and persistence settings shape the local staging at
start, and how a scenario's Given-steps change them on the running staging and put them back.

The staging is module-scoped (started once, reused by every scenario of a feature file), so a knob is
applied in place, not by a new staging: PostgreSQL rewrites each node's role file
(`synchronous_standby_names`, `synchronous_commit`) and reloads, no restart; Redis gets `CONFIG SET`
on every running data node. Each setter returns the function that restores what was there, which
the step library calls after the scenario's drill concluded (its evidence written, its topology
restored), so the next scenario starts from the profile's settings and proves its own steady state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import get_args

import redis

from firedrill.config import Profile
from firedrill.config_knobs import AppendFsync, Replication, SyncCommit
from firedrill.errors import ConfigError, StagingError
from firedrill.staging.postgres import PgStaging, PgStagingConfig
from firedrill.staging.redis_sentinel import RedisSentinelStaging, RedisStagingConfig
from firedrill.targets.local_postgres import LocalPostgresTarget
from firedrill.targets.local_redis import LocalRedisTarget

Restore = Callable[[], str]
REPLICATION_WORDS: dict[str, Replication] = {
    "synchronous": "sync",
    "asynchronous": "async",
    "quorum": "quorum",
}


def pg_staging_config(profile: Profile) -> PgStagingConfig:
    mode = profile.replication_mode()
    return PgStagingConfig(
        sync_replication=mode != "async",
        quorum=mode == "quorum",
        synchronous_commit=profile.synchronous_commit,
    )


def redis_staging_config(profile: Profile) -> RedisStagingConfig:
    knobs = profile.redis
    return RedisStagingConfig(
        min_replicas_to_write=knobs.min_replicas_to_write,
        appendonly=knobs.appendfsync is not None,
        appendfsync=knobs.appendfsync or "everysec",
    )


def replication_mode(word: str) -> Replication:
    if word not in REPLICATION_WORDS:
        raise ConfigError(f"replication must be synchronous, asynchronous or quorum, not {word!r}")
    return REPLICATION_WORDS[word]


def sync_commit(value: str) -> SyncCommit:
    allowed: tuple[SyncCommit, ...] = get_args(SyncCommit)
    for option in allowed:
        if value == option:
            return option
    raise ConfigError(f"synchronous_commit must be one of {', '.join(allowed)}, not {value!r}")


def _pg_staging(target: object, what: str) -> PgStaging:
    if not isinstance(target, LocalPostgresTarget):
        raise ConfigError(
            f"{what} can be changed on the local PostgreSQL staging only, not on a {type(target).__name__}"
        )
    return target.staging


def _describe_pg(cfg: PgStagingConfig) -> str:
    mode = ("quorum (ANY 1)" if cfg.quorum else "synchronous") if cfg.sync_replication else "asynchronous"
    return f"{mode} replication, synchronous_commit = {cfg.synchronous_commit}"


def set_pg_knobs(
    target: object, *, replication: Replication | None = None, synchronous_commit: SyncCommit | None = None
) -> Restore:
    """Apply to the running staging now; return the restorer."""
    staging = _pg_staging(target, "replication settings")
    before = staging.config
    cfg = before
    if replication is not None:
        cfg = replace(cfg, sync_replication=replication != "async", quorum=replication == "quorum")
    if synchronous_commit is not None:
        cfg = replace(cfg, synchronous_commit=synchronous_commit)
    staging.reconfigure(cfg)

    def restore() -> str:
        now = staging.config
        back = replace(
            now,
            sync_replication=before.sync_replication,
            quorum=before.quorum,
            synchronous_commit=before.synchronous_commit,
        )
        if back != now:
            staging.reconfigure(back)
        return f"PostgreSQL back to {_describe_pg(back)}"

    return restore


def _redis_staging(target: object, what: str) -> RedisSentinelStaging:
    if not isinstance(target, LocalRedisTarget):
        raise ConfigError(
            f"{what} can be changed on the local Redis staging only, not on a {type(target).__name__}"
        )
    return target.staging


def _config_set_all(staging: RedisSentinelStaging, cfg: RedisStagingConfig) -> None:
    for node in staging.nodes:
        if not staging.is_running(node) or staging.is_frozen(node):
            continue
        client = staging.client(node)
        try:
            client.config_set("min-replicas-to-write", cfg.min_replicas_to_write)
            if cfg.appendonly:
                client.config_set("appendfsync", cfg.appendfsync)
            client.config_set("appendonly", "yes" if cfg.appendonly else "no")
        except redis.RedisError as exc:
            raise StagingError(f"CONFIG SET on {node.name} failed: {exc}") from exc


def set_redis_knobs(
    target: object, *, min_replicas_to_write: int | None = None, appendfsync: str | None = None
) -> Restore:
    """CONFIG SET on every running data node (master and replicas, so a promoted replica has them
    too); return the restorer."""
    staging = _redis_staging(target, "Redis replication and persistence settings")
    before = staging.config
    cfg = before
    if min_replicas_to_write is not None:
        if not 0 <= min_replicas_to_write <= len(staging.nodes) - 1:
            raise ConfigError(
                f"min-replicas-to-write {min_replicas_to_write} is outside 0..{len(staging.nodes) - 1} "
                "(the staging's replicas)"
            )
        cfg = replace(cfg, min_replicas_to_write=min_replicas_to_write)
    if appendfsync is not None:
        policies: tuple[AppendFsync, ...] = get_args(AppendFsync)
        policy = next((p for p in policies if p == appendfsync), None)
        if policy is None:
            raise ConfigError(f"appendfsync must be one of {', '.join(policies)}, not {appendfsync!r}")
        cfg = replace(cfg, appendonly=True, appendfsync=policy)
    _config_set_all(staging, cfg)
    staging.config = cfg

    def restore() -> str:
        _config_set_all(staging, before)
        staging.config = before
        aof = f"appendfsync {before.appendfsync}" if before.appendonly else "AOF off"
        return f"Redis back to min-replicas-to-write {before.min_replicas_to_write}, {aof}"

    return restore
