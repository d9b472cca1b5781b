"""firedrill's reference application: a small real web service in front of PostgreSQL and Redis, so a
drill measures the outage the way users of a service see it, not only at the store.

- HTTP: the standard library's ThreadingHTTPServer (one thread a request), JSON in and out.
- PostgreSQL: a psycopg_pool connection pool over a multi-host conninfo with
  `target_session_attrs=read-write`, as applications run it. After a failover its pooled connections
  are dead: a request that gets one fails (503) and the pool drops it; new connections are opened by
  the pool's workers, which back off exponentially (from 1 s) while no host is writable. That is why
  the service comes back some time after the store does: the "pool reconnect" phase of a drill.
- Redis (optional): a redis-py Sentinel client; `store=redis` writes go to the master Sentinel names.
- `store=all`: a request writes to every configured store, PostgreSQL then Redis, as a service that
  needs both does; it is acknowledged only when both writes are, and a record reads back only when
  every store holds it. Such a service cannot be back before the slower of its stores.

Endpoints (the contract firedrill's service probe speaks; any application implementing it works):
    POST /records[?store=pg|redis|all] {"probe": "<id>", "seq": <int>}  -> 201 {"node": "<host:port>"}
    GET  /records?probe=<id>[&store=]  -> 200 {"seqs": [...]}   (all: "<pg host:port>+<redis host:port>")
    GET  /healthz                      -> 200 {"ok": true}
A failure is 503 {"error": "<class>"} (PoolTimeout, OperationalError, ReadOnly, ...).

Run: python app.py --listen 127.0.0.1:0 --pg "host=h1,h2 port=p1,p2 dbname=... user=..." \
                   [--sentinels 127.0.0.1:26379,... --redis-service NAME]
It prints `listening on http://HOST:PORT` once it serves, and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
import redis
from psycopg_pool import ConnectionPool, PoolTimeout
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

SCHEMA = """
CREATE TABLE IF NOT EXISTS app_records (
    probe text NOT NULL,
    seq bigint NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (probe, seq)
)"""
INSERT = (
    "INSERT INTO app_records (probe, seq) VALUES (%s, %s) ON CONFLICT DO NOTHING "
    "RETURNING host(inet_server_addr()) || ':' || inet_server_port()"
)


def _pg_target(conninfo: str) -> str:
    if "target_session_attrs" not in conninfo:
        conninfo += " target_session_attrs=read-write"
    return conninfo


class Stores:
    def __init__(self, pg: str | None, sentinels: list[tuple[str, int]], service: str | None) -> None:
        self.pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] | None = None
        if pg:
            self.pool = ConnectionPool(
                _pg_target(pg),
                min_size=4,
                max_size=8,
                timeout=1.0,  # a request waits at most 1 s for a connection
                kwargs={"autocommit": True},
                name="reference-app",
                open=False,
            )
            self.pool.open(wait=True, timeout=15)
            with self.pool.connection() as conn:
                conn.execute(SCHEMA)
        self.redis: redis.Redis | None = None
        if sentinels and service:
            # Fail fast, the caller retries. redis-py 8's defaults are a 5 s connect timeout (that
            # socket_timeout does not shorten) and 10 retries with backoff at each nested level of a
            # Sentinel client (the command, the master connection, each Sentinel asked). With a lost
            # zone's Sentinel first in the list, they held requests for 5 s each and the service 60 s
            # after a 3.3 s Redis failover. Here an unreachable Sentinel costs one 0.5 s timeout, and
            # the client asks the next one.
            once: dict[str, Any] = {"retry": Retry(NoBackoff(), 0), "socket_connect_timeout": 0.5}
            new_sentinel: Any = Sentinel  # redis-py leaves these unannotated
            sentinel = new_sentinel(
                sentinels, socket_timeout=0.5, sentinel_kwargs={"socket_timeout": 0.5, **once}
            )
            master_for: Any = sentinel.master_for
            self.redis = master_for(service, socket_timeout=0.5, **once)

    def stores(self) -> list[str]:
        return [name for name, there in (("pg", self.pool), ("redis", self.redis)) if there is not None]

    def write(self, store: str, probe: str, seq: int) -> str:
        if store == "all":
            return "+".join(self.write(name, probe, seq) for name in self.stores())
        if store == "redis":
            if self.redis is None:
                raise LookupError("no Redis configured")
            self.redis.hset(f"app:records:{probe}", str(seq), "1")
            conn = self.redis.connection_pool.get_master_address()  # type: ignore[attr-defined]
            return f"{conn[0]}:{conn[1]}"
        if self.pool is None:
            raise LookupError("no PostgreSQL configured")
        with self.pool.connection() as conn:
            row = conn.execute(INSERT, (probe, seq)).fetchone()
        return str(row[0]) if row else "duplicate"

    def read(self, store: str, probe: str) -> list[int]:
        if store == "all":
            held = [set(self.read(name, probe)) for name in self.stores()]
            return sorted(set.intersection(*held)) if held else []
        if store == "redis":
            if self.redis is None:
                raise LookupError("no Redis configured")
            return sorted(int(k) for k in self.redis.hkeys(f"app:records:{probe}"))
        if self.pool is None:
            raise LookupError("no PostgreSQL configured")
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT seq FROM app_records WHERE probe = %s ORDER BY seq", (probe,)
            ).fetchall()
        return [int(r[0]) for r in rows]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close(timeout=2)
        if self.redis is not None:
            self.redis.close()


def error_class(exc: BaseException) -> str:
    if isinstance(exc, PoolTimeout):
        return "PoolTimeout"
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return "ReadOnly"
    if isinstance(exc, redis.RedisError):
        return "Redis" + type(exc).__name__
    return type(exc).__name__


def make_handler(stores: Stores) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the probe reuses its connection
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:  # quiet: a drill sends thousands
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _query(self) -> dict[str, str]:
            return {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}

        def do_GET(self) -> None:
            path, q = urlparse(self.path).path, self._query()
            if path == "/healthz":
                self._reply(200, {"ok": True})
                return
            if path != "/records" or "probe" not in q:
                self._reply(404, {"error": "NotFound"})
                return
            try:
                self._reply(200, {"seqs": stores.read(q.get("store", "pg"), q["probe"])})
            except Exception as exc:  # the store failing is a 503, never a crash of the service
                self._reply(503, {"error": error_class(exc)})

        def do_POST(self) -> None:
            if urlparse(self.path).path != "/records":
                self._reply(404, {"error": "NotFound"})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                probe, seq = str(body["probe"]), int(body["seq"])
            except (ValueError, KeyError, TypeError):
                self._reply(400, {"error": "BadRequest"})
                return
            try:
                node = stores.write(self._query().get("store", "pg"), probe, seq)
            except Exception as exc:
                self._reply(503, {"error": error_class(exc)})
                return
            self._reply(201, {"node": node})

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="firedrill's reference application")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--pg", default=None, help="libpq conninfo (multi-host)")
    parser.add_argument("--sentinels", default="", help="HOST:PORT,HOST:PORT of the Redis Sentinels")
    parser.add_argument("--redis-service", default=None, help="the master name the Sentinels monitor")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    sentinels = [(h, int(p)) for h, _, p in (s.rpartition(":") for s in args.sentinels.split(",") if s)]
    stores = Stores(args.pg, sentinels, args.redis_service)
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), make_handler(stores))
    server.daemon_threads = True

    def _stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    bound_host, bound_port = server.server_address[:2]
    if isinstance(bound_host, bytes):
        bound_host = bound_host.decode()
    print(f"listening on http://{bound_host}:{bound_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        stores.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
