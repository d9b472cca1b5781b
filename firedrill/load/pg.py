"""The background load on PostgreSQL: one autocommit connection a writer, through the same
multi-host conninfo an application uses (`target_session_attrs=read-write`), so after a failover the
writers find the promoted standby by themselves.

Rows go to `firedrill_load` (run id, global seq, writer, payload of the requested size); reading a
run back is one `SELECT seq`. The statements are prepared by psycopg after a few executions.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import psycopg

from firedrill.errors import ProbeFailure, TargetError

LOAD_TABLE = "firedrill_load"

CREATE_LOAD = f"""
CREATE TABLE IF NOT EXISTS {LOAD_TABLE} (
    run_id text NOT NULL,
    seq bigint NOT NULL,
    writer int NOT NULL,
    payload text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, seq)
)"""
INSERT_LOAD = f"INSERT INTO {LOAD_TABLE} (run_id, seq, writer, payload) VALUES (%s, %s, %s, %s)"
SELECT_ONE = f"SELECT length(payload) FROM {LOAD_TABLE} WHERE run_id = %s AND seq = %s"
SELECT_RUN = f"SELECT seq FROM {LOAD_TABLE} WHERE run_id = %s"

CLIENT = (
    "psycopg 3, one autocommit connection a writer, multi-host conninfo with target_session_attrs=read-write"
)


def payload(row_bytes: int) -> str:
    """A payload of exactly `row_bytes` ASCII bytes (not all one letter, so it is not trivially
    compressible by TOAST)."""
    base = "firedrill-load-0123456789abcdefghijklmnopqrstuvwxyz-"
    return (base * (row_bytes // len(base) + 1))[:row_bytes]


def error_class(exc: psycopg.Error) -> str:
    text = str(exc).lower()
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction) or "read-only" in text or "read only" in text:
        return "ReadOnly"
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return "StatementTimeout"
    if isinstance(exc, psycopg.errors.AdminShutdown) or "terminating connection" in text:
        return "AdminShutdown"
    if "server closed the connection" in text or "connection is lost" in text or "consuming input" in text:
        return "ConnectionLost"
    if "connection refused" in text:
        return "ConnectionRefused"
    if "starting up" in text or "shutting down" in text or "in recovery" in text or exc.sqlstate == "57P03":
        return "CannotConnectNow"
    if "timeout" in text or "timed out" in text:
        return "Timeout"
    return type(exc).__name__


@dataclass(frozen=True)
class PgLoadEndpoint:
    """Where the load connects: a libpq conninfo (may list several hosts) and its password."""

    conninfo: str
    password: str | None = field(default=None, repr=False)

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.conninfo, autocommit=True, password=self.password)


class PgLoadSession:
    """One writer's connection, opened lazily on the writer's thread."""

    def __init__(self, endpoint: PgLoadEndpoint, run_id: str, row_bytes: int) -> None:
        self._endpoint = endpoint
        self._run_id = run_id
        self._payload = payload(row_bytes)
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None:
            self._conn = self._endpoint.connect()
        return self._conn

    def write(self, seq: int, writer: int) -> None:
        try:
            self._connection().execute(INSERT_LOAD, (self._run_id, seq, writer, self._payload))
        except psycopg.Error as exc:
            raise ProbeFailure(error_class(exc), code=exc.sqlstate) from exc

    def read(self, seq: int) -> None:
        try:
            row = self._connection().execute(SELECT_ONE, (self._run_id, seq)).fetchone()
        except psycopg.Error as exc:
            raise ProbeFailure(error_class(exc), code=exc.sqlstate) from exc
        if row is None:
            raise ProbeFailure("ReadMissing", f"load record {seq} not found")

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def prepare(endpoint: PgLoadEndpoint) -> None:
    try:
        with endpoint.connect() as conn:
            conn.execute(CREATE_LOAD)
    except psycopg.Error as exc:
        raise TargetError(f"cannot create {LOAD_TABLE}: {_one_line(exc)}", code=exc.sqlstate) from exc


def read_back(endpoint: PgLoadEndpoint, run_id: str) -> frozenset[int]:
    """The seqs of the run's load rows that the writable node of `endpoint` holds."""
    try:
        with endpoint.connect() as conn:
            rows = conn.execute(SELECT_RUN, (run_id,)).fetchall()
    except psycopg.Error as exc:
        raise TargetError(f"cannot read back the load's rows: {_one_line(exc)}", code=exc.sqlstate) from exc
    return frozenset(int(r[0]) for r in rows)  # type: ignore[call-overload]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
