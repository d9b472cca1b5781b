"""Canary records in PostgreSQL: the table, the probe session, and reading them back.

Shared by every PostgreSQL target (local staging, RDS): only the connection details differ.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import psycopg

from firedrill.errors import ProbeFailure, TargetError
from firedrill.probes import ProbeConfig

CANARY_TABLE = "firedrill_canary"

CREATE_CANARY = f"""
CREATE TABLE IF NOT EXISTS {CANARY_TABLE} (
    run_id text NOT NULL,
    seq bigint NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, seq)
)"""

INSERT_CANARY = (
    f"INSERT INTO {CANARY_TABLE} (run_id, seq) VALUES (%s, %s) "
    "RETURNING host(inet_server_addr()) || ':' || inet_server_port()"
)


@dataclass(frozen=True)
class PgEndpoint:
    """Where probes connect. `hosts` may list several (libpq multi-host, first writable wins).
    The password is kept out of `conninfo()` so that string can be logged."""

    hosts: tuple[tuple[str, int], ...]
    dbname: str
    user: str
    password: str | None = field(default=None, repr=False)
    sslmode: str = "prefer"

    def conninfo(self, *, statement_timeout_ms: int | None = None, read_write: bool = True) -> str:
        parts = [
            "host=" + ",".join(h for h, _ in self.hosts),
            "port=" + ",".join(str(p) for _, p in self.hosts),
            f"dbname={self.dbname}",
            f"user={self.user}",
            f"sslmode={self.sslmode}",
            "connect_timeout=2",  # libpq's minimum; the probe enforces its own, shorter deadline
            "application_name=firedrill",
        ]
        if read_write:
            parts.append("target_session_attrs=read-write")
        if statement_timeout_ms:
            parts.append(f"options='-c statement_timeout={statement_timeout_ms}'")
        return " ".join(parts)

    def connect(self, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
        try:
            return psycopg.connect(self.conninfo(), autocommit=True, password=self.password, **kwargs)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise TargetError(_one_line(exc), code=exc.sqlstate) from exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def probe_error_class(exc: psycopg.Error) -> str:
    """A short, secret-free class for a failed probe operation."""
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return "ReadOnly"
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return "StatementTimeout"
    if isinstance(exc, psycopg.errors.AdminShutdown):
        return "AdminShutdown"
    if exc.sqlstate == "57P03":
        return "CannotConnectNow"
    text = str(exc).lower()
    if "server closed the connection" in text or "terminating connection" in text:
        return "ConnectionLost"
    if "shutting down" in text or "starting up" in text or "in recovery" in text:
        return "CannotConnectNow"
    if "connection refused" in text:
        return "ConnectionRefused"
    if "read-write" in text or "read only" in text:
        return "NoWritableHost"
    if "timeout" in text:
        return "ConnectTimeout"
    return type(exc).__name__


class PgCanarySession:
    """One probe connection. Connects lazily, on the probe's worker thread, inside its deadline."""

    def __init__(self, endpoint: PgEndpoint, run_id: str, probe: ProbeConfig) -> None:
        self._endpoint = endpoint
        self._run_id = run_id
        # The client enforces the probe's deadline; the server-side timeout only stops an abandoned
        # statement from lingering. It must not be the deadline itself: its clock runs through a
        # SIGSTOP, so it would cancel, right after the resume, the write whose late ack shows recovery.
        self._statement_timeout_ms = max(5000, int(probe.op_timeout_s * 10_000))
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def write(self, seq: int) -> str:
        try:
            if self._conn is None:
                self._conn = psycopg.connect(
                    self._endpoint.conninfo(statement_timeout_ms=self._statement_timeout_ms),
                    autocommit=True,
                    password=self._endpoint.password,
                )
            row = self._conn.execute(INSERT_CANARY, (self._run_id, seq)).fetchone()
        except psycopg.Error as exc:
            raise ProbeFailure(probe_error_class(exc), code=exc.sqlstate) from exc
        return str(row[0]) if row else "unknown"

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def prepare_canary(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    try:
        conn.execute(CREATE_CANARY)
    except psycopg.Error as exc:
        raise TargetError(f"cannot create {CANARY_TABLE}: {_one_line(exc)}", code=exc.sqlstate) from exc


def read_back(conn: psycopg.Connection[tuple[object, ...]], run_id: str) -> frozenset[int]:
    try:
        rows = conn.execute(f"SELECT seq FROM {CANARY_TABLE} WHERE run_id = %s", (run_id,)).fetchall()
    except psycopg.Error as exc:
        raise TargetError(f"cannot read back canary records: {_one_line(exc)}", code=exc.sqlstate) from exc
    return frozenset(int(r[0]) for r in rows)  # type: ignore[call-overload]
