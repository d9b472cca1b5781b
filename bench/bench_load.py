"""firedrill benchmark of the background load and the probes: how fast the load generator can drive
this machine's stores, next to pgbench and redis-benchmark on the same staging, and what the load
and the probes cost in client CPU. Figures from one run, side by side; not a test.

  pg      saturated firedrill load (8 writers, no rate limit) vs `pgbench -c 8` running the same
          INSERT into the same table with the same 64-byte payload, on the same staging
  redis   saturated firedrill load (8 writers, HSET) vs `redis-benchmark -c 8 -t hset -d 64`
          (no pipelining) on the same master
  cpu     client CPU (this process, all threads, getrusage) of the load at 2000 ops/s, and of the
          canary and the service probe at 50 Hz, per second and per 1000 operations

Run: `.venv/bin/python bench/bench_load.py [--only pg,redis,cpu] [--seconds 5] [--json out.json]`.
Bounded: every phase stops by itself after --seconds; stagings are torn down on every exit path.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firedrill.load import pg as load_pg
from firedrill.load import redis as load_redis
from firedrill.load.accounting import acknowledged_writes
from firedrill.load.generator import LoadGenerator, LoadSessionFactory, LoadSpec
from firedrill.load.http import HttpServiceSession
from firedrill.probes import CanaryWriter, ProbeConfig
from firedrill.staging.postgres import PgStaging, PgStagingConfig
from firedrill.staging.redis_sentinel import RedisSentinelStaging
from firedrill.staging.reference_app import ReferenceApp
from firedrill.targets.local_postgres import LocalPostgresTarget
from firedrill.targets.local_redis import LocalRedisTarget
from firedrill.timeline import Timeline

SATURATE = 100_000.0  # requested ops/s: far above what 8 Python writers reach, so they never wait


def say(line: str = "") -> None:
    print(line, flush=True)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_load(factory: LoadSessionFactory, spec: LoadSpec, seconds: float) -> dict[str, float]:
    gen = LoadGenerator(factory, spec)
    c0 = cpu_s()
    gen.start()
    time.sleep(seconds)
    gen.stop()
    used = cpu_s() - c0
    s = gen.samples()
    span = (gen.stopped_at or 0) - (gen.started_at or 0)
    acked = len(acknowledged_writes(s))
    return {
        "requested_per_s": spec.rate_per_s,
        "acked_per_s": acked / span,
        "failed": float(len(s) - acked),
        "cpu_cores": used / span,
        "cpu_ms_per_1000": used / max(acked, 1) * 1e6,
    }


def part_pg(seconds: float, out: dict[str, Any]) -> None:
    with PgStaging(PgStagingConfig(sync_replication=False)) as staging:
        target = LocalPostgresTarget(staging)
        target.check_steady_state(max_lag_s=1.0, timeout_s=30)
        ep = load_pg.PgLoadEndpoint(target.endpoint().conninfo())
        load_pg.prepare(ep)
        spec = LoadSpec(writers=8, rate_per_s=SATURATE, row_bytes=64)
        fd = run_load(lambda: load_pg.PgLoadSession(ep, "bench-pg", 64), spec, seconds)
        payload = load_pg.payload(64)
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "insert.sql"
            script.write_text(
                "\\set seq random(1, 9000000000000000000)\n"
                f"INSERT INTO {load_pg.LOAD_TABLE} (run_id, seq, writer, payload) "
                f"VALUES ('pgbench', :seq, :client_id, '{payload}');\n"
            )
            assert staging.binaries is not None
            proc = subprocess.run(
                [
                    staging.binaries.tool("pgbench"),
                    "-n", "-c", "8", "-j", "2", "-T", str(max(1, round(seconds))), "-f", str(script),
                    "-h", "127.0.0.1", "-p", str(staging.primary.port), "-U", "firedrill", "firedrill",
                ],
                capture_output=True, text=True, timeout=seconds + 60,
            )  # fmt: skip
        m = re.search(r"tps = ([\d.]+)", proc.stdout)
        if m is None:
            raise SystemExit(f"pgbench gave no tps: {proc.stdout[-500:]} {proc.stderr[-500:]}")
        tps = float(m.group(1))
    out["pg"] = {"firedrill": fd, "pgbench_tps": tps, "ratio": fd["acked_per_s"] / tps}
    say(
        f"PostgreSQL INSERT, 8 clients, async replication: firedrill load {fd['acked_per_s']:,.0f}/s "
        f"({fd['cpu_cores']:.2f} client cores), pgbench {tps:,.0f}/s: ratio {fd['acked_per_s'] / tps:.2f}"
    )


def part_redis(seconds: float, out: dict[str, Any]) -> None:
    with RedisSentinelStaging() as staging:
        target = LocalRedisTarget(staging)
        target.check_steady_state(max_lag_s=1.0, timeout_s=30)
        sentinel = target.endpoint()
        ep = load_redis.RedisLoadEndpoint(sentinel.sentinels, sentinel.service_name)
        load_redis.prepare(ep, "bench-redis")
        spec = LoadSpec(writers=8, rate_per_s=SATURATE, row_bytes=64)
        fd = run_load(lambda: load_redis.RedisLoadSession(ep, "bench-redis", 64), spec, seconds)
        master = staging.current_master()
        requests = max(20_000, int(fd["acked_per_s"] * seconds * 2))
        proc = subprocess.run(
            ["redis-benchmark", "-h", "127.0.0.1", "-p", str(master.port), "-c", "8", "-n", str(requests),
             "-t", "hset", "-d", "64", "-P", "1", "-q"],
            capture_output=True, text=True, timeout=seconds * 10 + 60,
        )  # fmt: skip
        m = re.search(r"HSET: ([\d.]+) requests per second", proc.stdout.replace("\r", "\n"))
        if m is None:
            raise SystemExit(f"redis-benchmark gave no rate: {proc.stdout[-500:]} {proc.stderr[-500:]}")
        rps = float(m.group(1))
    out["redis"] = {"firedrill": fd, "redis_benchmark_rps": rps, "ratio": fd["acked_per_s"] / rps}
    say(
        f"Redis HSET, 8 clients: firedrill load {fd['acked_per_s']:,.0f}/s ({fd['cpu_cores']:.2f} client "
        f"cores), redis-benchmark {rps:,.0f}/s: ratio {fd['acked_per_s'] / rps:.2f}"
    )


def _cpu_of(start: Callable[[], Callable[[], None]], seconds: float) -> float:
    """Client CPU cores used while the started thing runs (`start` returns its stopper)."""
    time.sleep(0.3)
    c0, t0 = cpu_s(), time.monotonic()
    stop = start()
    time.sleep(seconds)
    used, span = cpu_s() - c0, time.monotonic() - t0
    stop()
    return used / span


def part_cpu(seconds: float, out: dict[str, Any]) -> None:
    with PgStaging() as staging:
        target = LocalPostgresTarget(staging)
        target.check_steady_state(max_lag_s=1.0, timeout_s=30)
        ep = load_pg.PgLoadEndpoint(target.endpoint().conninfo())
        load_pg.prepare(ep)
        spec = LoadSpec(writers=8, rate_per_s=2000, row_bytes=64)
        load = run_load(lambda: load_pg.PgLoadSession(ep, "bench-cpu", 64), spec, seconds)
        target.prepare_canary("bench-canary")
        cfg = ProbeConfig(rate_hz=50)

        def canary() -> Callable[[], None]:
            writer = CanaryWriter("canary", target.session_factory("bench-canary", cfg), Timeline(), cfg)
            writer.start()
            return writer.stop

        canary_cores = _cpu_of(canary, seconds)
        with ReferenceApp(pg_conninfo=target.endpoint().conninfo()) as app:
            url = app.url

            def service() -> Callable[[], None]:
                session = lambda: HttpServiceSession(url, "bench-service", cfg.op_timeout_s, "pg")  # noqa: E731
                writer = CanaryWriter("service", session, Timeline(), cfg)
                writer.start()
                return writer.stop

            service_cores = _cpu_of(service, seconds)
    out["cpu"] = {
        "load_2000_per_s": load,
        "canary_50hz_cores": canary_cores,
        "service_probe_50hz_cores": service_cores,
    }
    say(
        f"client CPU: load at 2000 ops/s {load['cpu_cores']:.2f} cores ({load['cpu_ms_per_1000']:.0f} ms per "
        f"1000 writes, achieved {load['acked_per_s']:,.0f}/s); canary 50 Hz {canary_cores * 100:.1f}% of a "
        f"core; service probe 50 Hz {service_cores * 100:.1f}% of a core (client side only)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="pg,redis,cpu")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measured phase")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    seconds = min(max(args.seconds, 1.0), 60.0)
    out: dict[str, Any] = {"seconds": seconds}
    parts = {"pg": part_pg, "redis": part_redis, "cpu": part_cpu}
    for name in args.only.split(","):
        parts[name.strip()](seconds, out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
