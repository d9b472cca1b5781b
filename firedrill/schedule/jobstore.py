"""The persistent job store: SQLite file by default, PostgreSQL by URL.

APScheduler's own `SQLAlchemyJobStore` would need SQLAlchemy, which firedrill does not depend on. This
module has a small job store of its own (`SQLiteJobStore`, `PostgresJobStore`) on the standard library's
`sqlite3` and on psycopg 3 (already a dependency). It stores what `SQLAlchemyJobStore` stores (id, next
run time as a UTC timestamp, the pickled job state), so it inherits the same caveat: whoever can write the
jobs table can make the scheduler unpickle arbitrary data; keep the store as private as the drills'
credentials.

The run guard table (`firedrill.schedule.leader.claim_run`) lives in the same SQLite file or PostgreSQL
schema; both tables are created together by a backend's `setup`, and the backends hold the guard's SQL.
"""

from __future__ import annotations

import hashlib
import pickle
import sqlite3
from abc import abstractmethod
from collections.abc import Sequence
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, cast

import psycopg
from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime
from psycopg import sql

from firedrill.errors import ConfigError, TargetError
from firedrill.schedule.config import IDENT_RE, ScheduleConfig, safe_url, store_kind

JOBS_TABLE = "firedrill_schedule_jobs"
RUNS_TABLE = "firedrill_schedule_runs"

RunRow = tuple[str, str, str, str | None]  # (drill, environment, quarter, run_id)


def make_job_store(config: ScheduleConfig) -> SQLiteJobStore | PostgresJobStore:
    kind, target = store_kind(config.job_store)
    if kind == "postgresql":
        return PostgresJobStore(target, schema=config.pg_schema)
    return SQLiteJobStore(Path(target))


class Backend(Protocol):
    def setup(self) -> None: ...
    def run(self, name: str, params: Sequence[object] = ()) -> tuple[list[tuple[Any, ...]], int]: ...
    def claim(self, drill: str, env: str, quarter: str, started: datetime, run_id: str | None) -> bool: ...
    def runs(self) -> list[RunRow]: ...
    def describe(self) -> str: ...


class SQLJobStore(BaseJobStore):  # type: ignore[misc]  # APScheduler is untyped
    """APScheduler job store over a `Backend`; same data model as APScheduler's SQLAlchemyJobStore."""

    def __init__(self) -> None:
        super().__init__()
        self._ready = False

    @property
    @abstractmethod
    def backend(self) -> Backend: ...

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._ensure()

    def _ensure(self) -> None:
        if not self._ready:
            self.backend.setup()
            self._ready = True

    def lookup_job(self, job_id: str) -> Job | None:
        self._ensure()
        rows, _ = self.backend.run("lookup", (job_id,))
        return self._reconstitute(rows[0][0]) if rows else None

    def get_due_jobs(self, now: datetime) -> list[Job]:
        self._ensure()
        rows, _ = self.backend.run("due", (datetime_to_utc_timestamp(now),))
        return self._jobs(rows)

    def get_next_run_time(self) -> datetime | None:
        self._ensure()
        rows, _ = self.backend.run("next")
        return cast("datetime | None", utc_timestamp_to_datetime(rows[0][0])) if rows else None

    def get_all_jobs(self) -> list[Job]:
        self._ensure()
        rows, _ = self.backend.run("all")
        jobs = self._jobs(rows)
        self._fix_paused_jobs_sorting(jobs)
        return jobs

    def add_job(self, job: Job) -> None:
        self._ensure()
        if self.backend.run("insert", (job.id, *self._values(job)))[1] == 0:
            raise ConflictingIdError(job.id)

    def update_job(self, job: Job) -> None:
        self._ensure()
        if self.backend.run("update", (*self._values(job), job.id))[1] == 0:
            raise JobLookupError(job.id)

    def remove_job(self, job_id: str) -> None:
        self._ensure()
        if self.backend.run("delete", (job_id,))[1] == 0:
            raise JobLookupError(job_id)

    def remove_all_jobs(self) -> None:
        self._ensure()
        self.backend.run("delete_all")

    @staticmethod
    def _values(job: Job) -> tuple[float | None, bytes]:
        state = pickle.dumps(job.__getstate__(), pickle.HIGHEST_PROTOCOL)
        return datetime_to_utc_timestamp(job.next_run_time), state

    def _reconstitute(self, state: bytes) -> Job:
        job_state = pickle.loads(state)  # same trust model as APScheduler's SQLAlchemyJobStore
        job_state["jobstore"] = self
        job = Job.__new__(Job)
        job.__setstate__(job_state)
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        return job

    def _jobs(self, rows: list[tuple[Any, ...]]) -> list[Job]:
        jobs: list[Job] = []
        for job_id, state in rows:
            try:
                jobs.append(self._reconstitute(bytes(state)))
            except Exception:
                self._logger.exception('Unable to restore job "%s" -- removing it', job_id)
                self.backend.run("delete", (job_id,))
        return jobs

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.backend.describe()}>"


class SQLiteJobStore(SQLJobStore):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self._backend = SQLiteBackend(Path(path))

    @property
    def backend(self) -> Backend:
        return self._backend


class PostgresJobStore(SQLJobStore):
    def __init__(self, url: str, *, schema: str = "public") -> None:
        super().__init__()
        self._backend = PostgresBackend(url, schema)

    @property
    def backend(self) -> Backend:
        return self._backend


# ---------------------------------------------------------------------------------------------- SQLite

_SQLITE_SETUP = (
    f"CREATE TABLE IF NOT EXISTS {JOBS_TABLE} "
    "(id TEXT PRIMARY KEY, next_run_time REAL, job_state BLOB NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {JOBS_TABLE}_next ON {JOBS_TABLE} (next_run_time)",
    f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (drill TEXT NOT NULL, environment TEXT NOT NULL, "
    "quarter TEXT NOT NULL, started_at TEXT NOT NULL, run_id TEXT, "
    "PRIMARY KEY (drill, environment, quarter))",
)
_SQLITE_SQL = {
    "lookup": f"SELECT job_state FROM {JOBS_TABLE} WHERE id = ?",
    "due": f"SELECT id, job_state FROM {JOBS_TABLE} WHERE next_run_time <= ? ORDER BY next_run_time",
    "next": f"SELECT next_run_time FROM {JOBS_TABLE} WHERE next_run_time IS NOT NULL "
    "ORDER BY next_run_time LIMIT 1",
    "all": f"SELECT id, job_state FROM {JOBS_TABLE} ORDER BY next_run_time",
    "insert": f"INSERT INTO {JOBS_TABLE} (id, next_run_time, job_state) VALUES (?, ?, ?) "
    "ON CONFLICT (id) DO NOTHING",
    "update": f"UPDATE {JOBS_TABLE} SET next_run_time = ?, job_state = ? WHERE id = ?",
    "delete": f"DELETE FROM {JOBS_TABLE} WHERE id = ?",
    "delete_all": f"DELETE FROM {JOBS_TABLE}",
    "claim": f"INSERT INTO {RUNS_TABLE} (drill, environment, quarter, started_at, run_id) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (drill, environment, quarter) DO NOTHING",
    "runs": f"SELECT drill, environment, quarter, run_id FROM {RUNS_TABLE} ORDER BY started_at",
}


class SQLiteBackend:
    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create directory for schedule store {self.path}: {exc.strerror}"
            ) from exc
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def setup(self) -> None:
        try:
            with closing(self._connect()) as conn:
                for stmt in _SQLITE_SETUP:
                    conn.execute(stmt)
        except sqlite3.Error as exc:
            raise sqlite_error(self.path, exc) from exc

    def run(self, name: str, params: Sequence[object] = ()) -> tuple[list[tuple[Any, ...]], int]:
        try:
            with closing(self._connect()) as conn:
                cur = conn.execute(_SQLITE_SQL[name], tuple(params))
                return cur.fetchall(), cur.rowcount
        except sqlite3.Error as exc:
            raise sqlite_error(self.path, exc) from exc

    def claim(self, drill: str, env: str, quarter: str, started: datetime, run_id: str | None) -> bool:
        self.setup()
        _, count = self.run("claim", (drill, env, quarter, started.isoformat(), run_id))
        return count == 1

    def runs(self) -> list[RunRow]:
        self.setup()
        rows, _ = self.run("runs")
        return [(str(a), str(b), str(c), None if d is None else str(d)) for a, b, c, d in rows]

    @staticmethod
    def claim_on(
        conn: sqlite3.Connection, drill: str, env: str, quarter: str, started: datetime, run_id: str | None
    ) -> bool:
        try:
            with conn:
                for stmt in _SQLITE_SETUP:
                    conn.execute(stmt)
                cur = conn.execute(_SQLITE_SQL["claim"], (drill, env, quarter, started.isoformat(), run_id))
                return cur.rowcount == 1
        except sqlite3.Error as exc:
            raise sqlite_error(Path("<connection>"), exc) from exc


# ---------------------------------------------------------------------------------------------- PostgreSQL


def _pg_sql(schema: str) -> tuple[list[sql.Composed], dict[str, sql.Composed]]:
    jobs = sql.Identifier(schema, JOBS_TABLE)
    runs = sql.Identifier(schema, RUNS_TABLE)
    index = sql.Identifier(f"{JOBS_TABLE}_next")
    setup = [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} "
            "(id TEXT PRIMARY KEY, next_run_time DOUBLE PRECISION, job_state BYTEA NOT NULL)"
        ).format(jobs),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (next_run_time)").format(index, jobs),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (drill TEXT NOT NULL, environment TEXT NOT NULL, "
            "quarter TEXT NOT NULL, started_at TIMESTAMPTZ NOT NULL DEFAULT now(), run_id TEXT, "
            "PRIMARY KEY (drill, environment, quarter))"
        ).format(runs),
    ]
    stmts = {
        "lookup": sql.SQL("SELECT job_state FROM {} WHERE id = %s").format(jobs),
        "due": sql.SQL(
            "SELECT id, job_state FROM {} WHERE next_run_time <= %s ORDER BY next_run_time"
        ).format(jobs),
        "next": sql.SQL(
            "SELECT next_run_time FROM {} WHERE next_run_time IS NOT NULL ORDER BY next_run_time LIMIT 1"
        ).format(jobs),
        "all": sql.SQL("SELECT id, job_state FROM {} ORDER BY next_run_time").format(jobs),
        "insert": sql.SQL(
            "INSERT INTO {} (id, next_run_time, job_state) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING"
        ).format(jobs),
        "update": sql.SQL("UPDATE {} SET next_run_time = %s, job_state = %s WHERE id = %s").format(jobs),
        "delete": sql.SQL("DELETE FROM {} WHERE id = %s").format(jobs),
        "delete_all": sql.SQL("DELETE FROM {}").format(jobs),
        "claim": sql.SQL(
            "INSERT INTO {} (drill, environment, quarter, started_at, run_id) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (drill, environment, quarter) DO NOTHING"
        ).format(runs),
        "runs": sql.SQL("SELECT drill, environment, quarter, run_id FROM {} ORDER BY started_at").format(
            runs
        ),
    }
    return setup, stmts


class PostgresBackend:
    def __init__(self, url: str, schema: str) -> None:
        if not IDENT_RE.match(schema):
            raise ConfigError(f"schedule.pg_schema: {schema!r} is not a plain SQL identifier")
        self.url = url
        self.schema = schema
        self._setup_sql, self._sql = _pg_sql(schema)

    def describe(self) -> str:
        return f"postgresql {safe_url(self.url)} schema {self.schema}"

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def setup(self) -> None:
        try:
            with self._connect() as conn:
                self.setup_on(conn, self.schema)
        except psycopg.Error as exc:
            raise pg_error(self.describe(), exc) from exc

    @staticmethod
    def setup_on(conn: psycopg.Connection[Any], schema: str) -> None:
        # Concurrent CREATE TABLE IF NOT EXISTS can fail with a unique violation: serialize it.
        setup, _ = _pg_sql(schema)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(f"setup:{schema}"),))
            for stmt in setup:
                conn.execute(stmt)

    def run(self, name: str, params: Sequence[object] = ()) -> tuple[list[tuple[Any, ...]], int]:
        try:
            with self._connect() as conn:
                cur = conn.execute(self._sql[name], tuple(params))
                rows = cur.fetchall() if cur.description is not None else []
                return rows, cur.rowcount
        except psycopg.Error as exc:
            raise pg_error(self.describe(), exc) from exc

    def claim(self, drill: str, env: str, quarter: str, started: datetime, run_id: str | None) -> bool:
        self.setup()
        _, count = self.run("claim", (drill, env, quarter, started, run_id))
        return count == 1

    def runs(self) -> list[RunRow]:
        self.setup()
        rows, _ = self.run("runs")
        return [(str(a), str(b), str(c), None if d is None else str(d)) for a, b, c, d in rows]

    @staticmethod
    def claim_on(
        conn: psycopg.Connection[Any],
        schema: str,
        drill: str,
        env: str,
        quarter: str,
        started: datetime,
        run_id: str | None,
    ) -> bool:
        if not IDENT_RE.match(schema):
            raise ConfigError(f"schema {schema!r} is not a plain SQL identifier")
        _, stmts = _pg_sql(schema)
        try:
            PostgresBackend.setup_on(conn, schema)
            with conn.transaction():
                cur = conn.execute(stmts["claim"], (drill, env, quarter, started, run_id))
                return cur.rowcount == 1
        except psycopg.Error as exc:
            raise pg_error("postgresql connection", exc) from exc


# ---------------------------------------------------------------------------------------------- helpers


def backend_for(job_store: str, schema: str) -> Backend:
    kind, target = store_kind(job_store)
    if kind == "postgresql":
        return PostgresBackend(target, schema)
    return SQLiteBackend(Path(target))


def lock_key(name: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock key for `name`, stable across processes."""
    return int.from_bytes(hashlib.sha256(f"firedrill:{name}".encode()).digest()[:8], "big", signed=True)


def pg_error(where: str, exc: psycopg.Error) -> TargetError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    code = exc.sqlstate or type(exc).__name__
    return TargetError(f"schedule store {where}: {first}", code=code)


def sqlite_error(path: Path, exc: sqlite3.Error) -> TargetError:
    code = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return TargetError(f"schedule store {path}: {exc}", code=code)


__all__ = [
    "JOBS_TABLE",
    "RUNS_TABLE",
    "PostgresJobStore",
    "SQLJobStore",
    "SQLiteJobStore",
    "make_job_store",
]
