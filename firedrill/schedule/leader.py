"""One scheduler at a time, and one run per (drill, environment, quarter).

APScheduler 3 does not support two schedulers on one job store: both fire the same job. `serve`
(`firedrill.schedule.service`) runs the scheduler only while it holds the leader lock from `leader_lock`:
`pg_try_advisory_lock` on a dedicated connection for PostgreSQL, an fcntl lock next to the SQLite file.
Session advisory locks do not survive PgBouncer transaction pooling: connect directly.

And every run claims a (drill, environment, quarter) row first (`claim_run`, a unique key in the run guard
table next to the jobs), so even two leaders never run a drill twice in a quarter. A claimed run stays
claimed when the drill fails: a drill that injected a fault is not re-run automatically; a human re-runs
it with `firedrill run`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

from firedrill.errors import ConfigError
from firedrill.schedule.config import ScheduleConfig, safe_url, store_kind
from firedrill.schedule.jobstore import (
    PostgresBackend,
    RunRow,
    SQLiteBackend,
    backend_for,
    lock_key,
    pg_error,
)

_QUARTER_RE = re.compile(r"^\d{4}-Q[1-4]$")

# ---------------------------------------------------------------------------------------------- run guard


def claim_run(
    conn_or_url: str | Path | psycopg.Connection[Any] | sqlite3.Connection,
    drill: str,
    env: str,
    quarter: str,
    *,
    run_id: str | None = None,
    schema: str = "public",
) -> bool:
    """Claim (drill, env, quarter): True for the first caller, False for everyone after.

    `INSERT ... ON CONFLICT DO NOTHING` on `firedrill_schedule_runs` (created if missing). Accepts a
    job-store string (path, sqlite:///path, postgresql:// URL) or an open psycopg / sqlite3 connection;
    a passed connection is committed (psycopg: unless the caller has a transaction open).
    """
    if not _QUARTER_RE.match(quarter):
        raise ConfigError(f"quarter {quarter!r} is not like 2026-Q4")
    started = datetime.now(UTC)
    if isinstance(conn_or_url, sqlite3.Connection):
        return SQLiteBackend.claim_on(conn_or_url, drill, env, quarter, started, run_id)
    if isinstance(conn_or_url, psycopg.Connection):
        return PostgresBackend.claim_on(conn_or_url, schema, drill, env, quarter, started, run_id)
    return backend_for(str(conn_or_url), schema).claim(drill, env, quarter, started, run_id)


def claimed_runs(job_store: str, *, schema: str = "public") -> list[RunRow]:
    """(drill, environment, quarter, run_id) rows of the run guard table, oldest first."""
    return backend_for(job_store, schema).runs()


# ---------------------------------------------------------------------------------------------- leader


class LeaderLock(Protocol):
    def try_acquire(self) -> bool: ...
    def held(self) -> bool: ...
    def release(self) -> None: ...


def leader_lock(config: ScheduleConfig) -> PostgresLeaderLock | FileLeaderLock:
    kind, target = store_kind(config.job_store)
    if kind == "postgresql":
        return PostgresLeaderLock(target, lock_key(f"leader:{config.pg_schema}:{config.effective_job_id}"))
    return FileLeaderLock(Path(target + ".leader"))


class PostgresLeaderLock:
    """`pg_try_advisory_lock` on a dedicated autocommit connection: held as long as that session lives."""

    def __init__(self, url: str, key: int) -> None:
        self.url = url
        self.key = key
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False

    def try_acquire(self) -> bool:
        if self._held and self.held():
            return True
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=10, application_name="firedrill-scheduler"
                )
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error as exc:
            self._drop()
            raise pg_error(f"leader lock on {safe_url(self.url)}", exc) from exc
        self._held = bool(row and row[0])
        return self._held

    def held(self) -> bool:
        if not self._held or self._conn is None or self._conn.closed:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            self._drop()
            return False
        return True

    def release(self) -> None:
        if self._conn is not None and not self._conn.closed and self._held:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        self._drop()

    def _drop(self) -> None:
        self._held = False
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None


class FileLeaderLock:
    """An exclusive fcntl lock on a file next to the SQLite store (one host)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open scheduler leader lock {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


__all__ = [
    "FileLeaderLock",
    "LeaderLock",
    "PostgresLeaderLock",
    "claim_run",
    "claimed_runs",
    "leader_lock",
]
