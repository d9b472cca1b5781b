"""Which background load a target can carry, and how it reaches the store: the binding of a failover
target to a load client (`firedrill.load.pg`, `.redis`).

A target offers a load through the capability `CarriesLoad` (any adapter, also another package's);
the local PostgreSQL and Redis targets are bound here from the endpoints they already publish, so
their modules need not know about the load. The load connects the way an application does: the
multi-host read-write conninfo for PostgreSQL, Sentinel for Redis, never a fixed node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from firedrill.errors import ConfigError
from firedrill.load import pg as load_pg
from firedrill.load import redis as load_redis
from firedrill.load.generator import LoadSessionFactory, LoadSpec
from firedrill.targets.local_postgres import LocalPostgresTarget
from firedrill.targets.local_redis import LocalRedisTarget


@dataclass(frozen=True)
class LoadBinding:
    store: str  # "postgres", "redis"
    client: str  # how the load connects, for the evidence
    prepare: Callable[[], None]
    factory: LoadSessionFactory
    read_back: Callable[[], frozenset[int]]


@runtime_checkable
class CarriesLoad(Protocol):
    def load_binding(self, run_id: str, spec: LoadSpec) -> LoadBinding: ...


def _statement_timeout_ms(spec: LoadSpec) -> int:
    return max(100, int(spec.op_timeout_s * 1000))


def bind_load(target: object, run_id: str, spec: LoadSpec) -> LoadBinding:
    """The load binding of `target`; ConfigError naming the targets that can carry one."""
    if isinstance(target, CarriesLoad):
        return target.load_binding(run_id, spec)
    if isinstance(target, LocalPostgresTarget):
        endpoint = target.endpoint()
        ep = load_pg.PgLoadEndpoint(
            endpoint.conninfo(statement_timeout_ms=_statement_timeout_ms(spec)), endpoint.password
        )
        return LoadBinding(
            store="postgres",
            client=load_pg.CLIENT,
            prepare=lambda: load_pg.prepare(ep),
            factory=lambda: load_pg.PgLoadSession(ep, run_id, spec.row_bytes),
            read_back=lambda: load_pg.read_back(ep, run_id),
        )
    if isinstance(target, LocalRedisTarget):
        sentinel = target.endpoint()
        rep = load_redis.RedisLoadEndpoint(
            sentinel.sentinels, sentinel.service_name, timeout_s=spec.op_timeout_s
        )
        return LoadBinding(
            store="redis",
            client=load_redis.CLIENT,
            prepare=lambda: load_redis.prepare(rep, run_id),
            factory=lambda: load_redis.RedisLoadSession(rep, run_id, spec.row_bytes),
            read_back=lambda: load_redis.read_back(rep, run_id),
        )
    raise ConfigError(
        f"a {type(target).__name__} cannot carry a background load "
        "(the local PostgreSQL and Redis staging can, and any target with load_binding())"
    )
