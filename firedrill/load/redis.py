"""The background load on Redis: one connection a writer to the master Sentinel names, as an
application's client finds it; after a failure the writer asks the Sentinels again.

Each run writes into one hash, `firedrill:load:<run_id>`, field = seq, value = the payload. HSET is
idempotent, so a retried write cannot count twice, and reading a run back is one HKEYS.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.exceptions import MasterDownError, ReadOnlyError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from firedrill.errors import ConfigError, ProbeFailure, TargetError
from firedrill.load.pg import payload

LOAD_PREFIX = "firedrill:load:"
CLIENT = "redis-py through Sentinel, one connection a writer, no retries, new master lookup after a failure"

# redis-py leaves these constructors unannotated.
_new_sentinel: Callable[..., Sentinel] = Sentinel
_new_pool: Callable[..., SentinelConnectionPool] = SentinelConnectionPool


def load_key(run_id: str) -> str:
    if not run_id or any(c.isspace() for c in run_id):
        raise ConfigError(f"invalid load run id {run_id!r}: it must be non-empty without spaces")
    return LOAD_PREFIX + run_id


def error_class(exc: redis.RedisError) -> str:
    text = str(exc).lower()
    if isinstance(exc, MasterNotFoundError):
        return "MasterNotFound"
    if isinstance(exc, ReadOnlyError) or "previous master is now a slave" in text:
        return "ReadOnly"
    if isinstance(exc, MasterDownError):
        return "MasterDown"
    if isinstance(exc, redis.TimeoutError):
        return "Timeout"
    if isinstance(exc, redis.ConnectionError):
        return "ConnectionRefused" if "refused" in text else "ConnectionLost"
    if isinstance(exc, redis.ResponseError):
        code = str(exc).split(" ", 1)[0]
        return code if code.isupper() and code.isalpha() else "ResponseError"
    return type(exc).__name__


@dataclass(frozen=True)
class RedisLoadEndpoint:
    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    timeout_s: float = 1.0

    def master(self) -> tuple[Sentinel, SentinelConnectionPool, redis.Redis]:
        t = self.timeout_s
        sentinel = _new_sentinel(
            list(self.sentinels),
            sentinel_kwargs={
                "socket_timeout": t,
                "socket_connect_timeout": t,
                "retry": Retry(NoBackoff(), 0),
            },
        )
        pool = _new_pool(
            self.service_name,
            sentinel,
            is_master=True,
            socket_timeout=t,
            socket_connect_timeout=t,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
        )
        return sentinel, pool, redis.Redis(connection_pool=pool, single_connection_client=True)


class RedisLoadSession:
    def __init__(self, endpoint: RedisLoadEndpoint, run_id: str, row_bytes: int) -> None:
        self._endpoint = endpoint
        self._key = load_key(run_id)
        self._payload = payload(row_bytes)
        self._parts: tuple[Sentinel, SentinelConnectionPool, redis.Redis] | None = None

    def _client(self) -> redis.Redis:
        if self._parts is None:
            self._parts = self._endpoint.master()
        return self._parts[2]

    def write(self, seq: int, writer: int) -> None:
        try:
            self._client().hset(self._key, str(seq), self._payload)
        except redis.RedisError as exc:
            raise ProbeFailure(error_class(exc), str(exc)) from exc

    def read(self, seq: int) -> None:
        try:
            found = self._client().hexists(self._key, str(seq))
        except redis.RedisError as exc:
            raise ProbeFailure(error_class(exc), str(exc)) from exc
        if not found:
            raise ProbeFailure("ReadMissing", f"load record {seq} not found")

    def close(self) -> None:
        if self._parts is not None:
            sentinel, pool, client = self._parts
            for closer in (client.close, pool.disconnect, sentinel.close):
                with contextlib.suppress(Exception):
                    closer()
            self._parts = None


def prepare(endpoint: RedisLoadEndpoint, run_id: str) -> None:
    """An empty hash for the run, on the master."""
    session = RedisLoadSession(endpoint, run_id, 0)
    try:
        session._client().delete(load_key(run_id))
    except redis.RedisError as exc:
        raise TargetError(f"cannot prepare the load's key: {exc}") from exc
    finally:
        session.close()


def read_back(endpoint: RedisLoadEndpoint, run_id: str) -> frozenset[int]:
    """The seqs of the run's load records that the current master holds."""
    session = RedisLoadSession(endpoint, run_id, 0)
    try:
        keys: list[bytes | str] = session._client().hkeys(load_key(run_id))
    except redis.RedisError as exc:
        raise TargetError(f"cannot read back the load's records: {exc}") from exc
    finally:
        session.close()
    return frozenset(int(k) for k in keys)
