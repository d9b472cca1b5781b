"""Canary records in Redis: the probe session (master found through Sentinel), its error classes,
and reading a run back.

Each run writes into one sorted set, `firedrill:canary:<run_id>`, with member = score = seq. ZADD is
idempotent, so the one retry a session allows cannot double-count a write, and reading a whole run
back is a single ZRANGE.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import redis
from redis.backoff import ConstantBackoff, NoBackoff
from redis.exceptions import BusyLoadingError, MasterDownError, ReadOnlyError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from firedrill.errors import ConfigError, ProbeFailure, TargetError
from firedrill.probes import ProbeConfig

CANARY_PREFIX = "firedrill:canary:"

# Share of the probe's deadline one socket wait may take: a first try and its one retry then both
# fit inside it, so a failed sample carries the server's error class rather than ClientTimeout.
_SOCKET_SHARE = 0.4

_RETRY_BACKOFF_S = 0.02

# For the evidence: the client behaviour the figures depend on (the switchover's lost writes do).
CLIENT_BEHAVIOUR = (
    "redis-py through Sentinel, one connection per probe session, socket and connect timeouts "
    f"{_SOCKET_SHARE:.0%} of the probe deadline, 1 retry on connection errors after "
    f"{_RETRY_BACKOFF_S * 1000:g} ms, "
    "none on timeouts, asks Sentinel again only when its connection fails"
)

# Replies that are a state of the service, not a bug of the probe; anything else keeps its code.
_RESPONSE_CLASSES = {"NOREPLICAS": "NoReplicas", "MISCONF": "Misconf", "OOM": "OutOfMemory"}


def canary_key(run_id: str) -> str:
    if not run_id or any(c.isspace() for c in run_id):
        raise ConfigError(f"invalid canary run id {run_id!r}: it must be non-empty without spaces")
    return CANARY_PREFIX + run_id


@dataclass(frozen=True)
class SentinelEndpoint:
    """Where probes find the master: the Sentinels and the name they monitor it under."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    password: str | None = field(default=None, repr=False)  # AUTH of the data nodes
    sentinel_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.sentinels:
            raise ConfigError(f"no Sentinel address given for Redis service {self.service_name!r}")
        if not self.service_name:
            raise ConfigError("a Redis Sentinel endpoint needs the monitored master's name")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def probe_error_class(exc: redis.RedisError) -> str:
    """A short, secret-free class for a failed canary write (subclasses are tested first)."""
    text = str(exc).lower()
    if isinstance(exc, MasterNotFoundError):
        return "MasterNotFound"  # no Sentinel names a master that is up: failover not done yet
    if isinstance(exc, ReadOnlyError) or "previous master is now a slave" in text:
        return "ReadOnly"  # a demoted master (redis-py rewrites its READONLY into that message)
    if isinstance(exc, BusyLoadingError):
        return "Loading"
    if isinstance(exc, MasterDownError) or text.startswith("masterdown"):
        return "MasterDown"
    if isinstance(exc, redis.TimeoutError):
        return "ConnectTimeout" if "connecting" in text else "Timeout"
    if isinstance(exc, redis.ConnectionError):
        if "refused" in text:
            return "ConnectionRefused"
        if "timeout" in text or "timed out" in text:
            return "Timeout"
        if any(s in text for s in ("closed", "reset", "broken pipe", "error while reading", "eof")):
            return "ConnectionLost"
        return "ConnectionError"
    if isinstance(exc, redis.ResponseError):
        code = str(exc).split(" ", 1)[0]
        if code in _RESPONSE_CLASSES:
            return _RESPONSE_CLASSES[code]
        return code if code.isupper() and code.isalpha() else "ResponseError"
    return type(exc).__name__


# redis-py leaves these constructors unannotated.
_new_sentinel: Callable[..., Sentinel] = Sentinel
_new_pool: Callable[..., SentinelConnectionPool] = SentinelConnectionPool


def _command_retry() -> Retry:
    # One quick retry, on connection errors only: after a failover or a CLIENT KILL the server closes
    # the connection and an application simply reconnects through Sentinel. Never on timeouts: a
    # stalled master must show as failed samples, not be waited out (redis-py's default is 3 retries
    # with up to 10 s back-off, which would hide an outage).
    return Retry(ConstantBackoff(_RETRY_BACKOFF_S), 1, supported_errors=(redis.ConnectionError,))


class RedisCanarySession:
    """One probe connection to the master Sentinel names. Connects lazily, on the probe's worker
    thread, inside its deadline; any failure makes the worker drop the session, so the next write
    asks the Sentinels again."""

    def __init__(self, endpoint: SentinelEndpoint, run_id: str, probe: ProbeConfig) -> None:
        self._endpoint = endpoint
        self._key = canary_key(run_id)
        self._socket_timeout = probe.op_timeout_s * _SOCKET_SHARE
        self._connect_timeout = min(probe.connect_timeout_s, probe.op_timeout_s) * _SOCKET_SHARE
        self._sentinel: Sentinel | None = None
        self._pool: SentinelConnectionPool | None = None
        self._client: redis.Redis | None = None

    def _connect(self) -> redis.Redis:
        t = self._connect_timeout
        self._sentinel = _new_sentinel(
            list(self._endpoint.sentinels),
            sentinel_kwargs={
                "socket_timeout": t,
                "socket_connect_timeout": t,
                "retry": Retry(NoBackoff(), 0),  # an unreachable Sentinel: ask the next one
                "protocol": 2,
                "password": self._endpoint.sentinel_password,
            },
        )
        # The pool `Sentinel.master_for` builds, with bounded timeouts and an explicit retry, but
        # behind a single-connection client: its connection then names the node that acknowledged
        # each write, also after a reconnect through Sentinel. RESP2: plain replies, no push frames.
        self._pool = _new_pool(
            self._endpoint.service_name,
            self._sentinel,
            is_master=True,
            socket_timeout=self._socket_timeout,
            socket_connect_timeout=t,
            retry=_command_retry(),
            protocol=2,
            password=self._endpoint.password,
        )
        self._client = redis.Redis(connection_pool=self._pool, single_connection_client=True)
        return self._client

    def write(self, seq: int) -> str:
        try:
            client = self._client or self._connect()
            client.zadd(self._key, {str(seq): seq})
        except redis.RedisError as exc:
            raise ProbeFailure(probe_error_class(exc), _one_line(exc)) from exc
        conn = client.connection
        return f"{conn.host}:{conn.port}" if conn is not None else "unknown"

    def close(self) -> None:
        for closer in (
            self._client.close if self._client else None,
            self._pool.disconnect if self._pool else None,
            self._sentinel.close if self._sentinel else None,
        ):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer()
        self._client = self._pool = self._sentinel = None


def read_back(client: redis.Redis, run_id: str) -> frozenset[int]:
    """Sequence numbers of the run's canary writes that `client`'s server holds."""
    try:
        members = cast(list[bytes | str], client.zrange(canary_key(run_id), 0, -1))
    except redis.RedisError as exc:
        raise TargetError(f"cannot read back canary records: {_one_line(exc)}") from exc
    return frozenset(int(m) for m in members)


def drop_canary(client: redis.Redis, run_id: str) -> None:
    """Remove a run's canary set (a re-used run id must start empty) and prove the master writable."""
    try:
        client.delete(canary_key(run_id))
    except redis.RedisError as exc:
        raise TargetError(f"cannot prepare the canary key: {_one_line(exc)}") from exc
