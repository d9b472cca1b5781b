"""Where drill leases live on systems firedrill did not start: a lock row in a PostgreSQL database
(an existing Patroni cluster) and a key with a PX TTL on a Redis master (a Sentinel deployment).
Vendor errors become TargetError here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import redis

from firedrill.errors import TargetError
from firedrill.targets.lease import DEFAULT_TTL_S, Holder, busy

LEASE_TABLE = "firedrill_lease"
_CREATE = f"""CREATE TABLE IF NOT EXISTS {LEASE_TABLE} (
    target text PRIMARY KEY,
    holder text NOT NULL,
    run_id text NOT NULL,
    expires_at timestamptz NOT NULL
)"""
# Taken when free, expired, or already ours (a retry of the same run); otherwise no row comes back.
_ACQUIRE = f"""INSERT INTO {LEASE_TABLE} AS l (target, holder, run_id, expires_at)
VALUES (%s, %s, %s, now() + make_interval(secs => %s))
ON CONFLICT (target) DO UPDATE SET holder = EXCLUDED.holder, run_id = EXCLUDED.run_id,
    expires_at = EXCLUDED.expires_at
WHERE l.expires_at < now() OR l.run_id = EXCLUDED.run_id
RETURNING run_id"""
_RENEW = f"""UPDATE {LEASE_TABLE} SET expires_at = now() + make_interval(secs => %s)
WHERE target = %s AND run_id = %s"""
_RELEASE = f"DELETE FROM {LEASE_TABLE} WHERE target = %s AND run_id = %s"
_HOLDER = f"SELECT holder FROM {LEASE_TABLE} WHERE target = %s"

Connect = Callable[[], psycopg.Connection[tuple[object, ...]]]


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass
class PgLockRow:
    """A row per target in `firedrill_lease`, with an expiry the database's clock judges."""

    connect: Connect
    target: str  # e.g. "patroni:orders-staging"
    name: str
    ttl_s: float = DEFAULT_TTL_S

    def acquire(self, holder: Holder) -> None:
        try:
            with self.connect() as conn:
                conn.execute(_CREATE)
                row = conn.execute(
                    _ACQUIRE, (self.target, holder.to_json(), holder.run_id, self.ttl_s)
                ).fetchone()
                if row is not None:
                    return
                current = conn.execute(_HOLDER, (self.target,)).fetchone()
        except psycopg.Error as exc:
            raise TargetError(
                f"cannot take the drill lease of {self.name}: {_line(exc)}", code=exc.sqlstate
            ) from exc
        raise busy(self.name, Holder.from_json(str(current[0])) if current else None)

    def renew(self, holder: Holder) -> bool:
        try:
            with self.connect() as conn:
                cur = conn.execute(_RENEW, (self.ttl_s, self.target, holder.run_id))
                if cur.rowcount == 1:
                    return True
        except (psycopg.Error, TargetError):
            return False  # the store is down (the drill's own fault, often): next period
        self.acquire(holder)  # the row was lost (e.g. with an old primary): take it again if free
        return True

    def release(self, holder: Holder) -> None:
        try:
            with self.connect() as conn:
                conn.execute(_RELEASE, (self.target, holder.run_id))
        except psycopg.Error as exc:
            raise TargetError(f"cannot release the drill lease of {self.name}: {_line(exc)}") from exc


# Renew only our own key; take it again if it vanished (a failover can lose it with the old master).
_RENEW_LUA = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not v then return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0 end
return 0
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class RedisLeaseKey:
    """`SET key holder NX PX ttl` on the current master."""

    client: Callable[[], redis.Redis]
    key: str  # e.g. "firedrill:lease:sessions-staging"
    name: str
    ttl_s: float = DEFAULT_TTL_S

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    def acquire(self, holder: Holder) -> None:
        value = holder.to_json()
        try:
            c = self.client()
            if c.set(self.key, value, nx=True, px=self._ttl_ms):
                return
            current = c.get(self.key)
        except redis.RedisError as exc:
            raise TargetError(f"cannot take the drill lease of {self.name}: {_line(exc)}") from exc
        text = (
            current.decode() if isinstance(current, bytes) else str(current) if current is not None else None
        )
        if text == value:
            return
        raise busy(self.name, Holder.from_json(text) if text else None)

    def renew(self, holder: Holder) -> bool:
        try:
            return bool(self.client().eval(_RENEW_LUA, 1, self.key, holder.to_json(), str(self._ttl_ms)))
        except (redis.RedisError, TargetError):
            return False

    def release(self, holder: Holder) -> None:
        try:
            self.client().eval(_RELEASE_LUA, 1, self.key, holder.to_json())
        except redis.RedisError as exc:
            raise TargetError(f"cannot release the drill lease of {self.name}: {_line(exc)}") from exc
