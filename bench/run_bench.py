"""firedrill benchmark: what the firedrill measures next to the bare operation, and what it costs.

Not a timed test: it prints figures from one run on this machine, side by side. Parts (`--only`):

  staging   local staging start-up (PostgreSQL primary + standby; Redis + 3 Sentinels) and teardown
  rto       local PostgreSQL failover (kill + promote): firedrill-measured RTO vs the bare pg_promote()
  probe     probe rate achieved and CPU of the probe threads, per 100 samples/s
  sweep     measured RTO, RTO error of a reset cut and probe CPU at 10, 50, 100, 200 Hz
  features  wall time of `pytest features/` (every drill)
  pitr      PITR of a generated ~1 GB database: firedrill restore vs the same restore by hand

Probe-thread CPU is read from /proc/self/task/<tid>/schedstat (ns of CPU per thread):
`time.thread_time()` only measures the calling thread, and the probe threads live inside
`CanaryWriter`. Run: `.venv/bin/python bench/run_bench.py [--only rto,probe] [--quick] [--json out.json]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from firedrill.drills import calibration as calibrate
from firedrill.drills.base import DrillRun, Objectives
from firedrill.drills.calibration_trials import CalibrationSettings
from firedrill.drills.failover import FailoverDrill, FailoverSettings
from firedrill.evidence import EvidenceRecord
from firedrill.faults.proxy import CutMode, FaultProxy
from firedrill.probes import CanaryWriter, ProbeConfig
from firedrill.run_context import RunContext
from firedrill.staging.common import free_port
from firedrill.staging.pg_binaries import service_user
from firedrill.staging.postgres import DATABASE, SUPERUSER, PgStaging, PgStagingConfig
from firedrill.staging.redis_sentinel import RedisSentinelStaging
from firedrill.targets.base import FaultKind, FaultSpec
from firedrill.targets.local_postgres import LocalPostgresTarget
from firedrill.timeline import EventKind, Timeline

REPO = Path(__file__).resolve().parents[1]
PARTS = ("staging", "rto", "probe", "sweep", "features", "pitr")


@dataclass
class Bench:
    quick: bool
    repeat: int
    rates: tuple[float, ...]
    pitr_scale: int
    scratch: Path
    results: dict[str, Any] = field(default_factory=dict)

    def ctx(self) -> RunContext:
        return RunContext(environment="local", via="bench", out_root=self.scratch / "evidence")


def say(line: str = "") -> None:
    print(line, flush=True)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.1f} ms"


# ---- CPU of the probe threads -------------------------------------------------------------------------
def _thread_cpu_ns(tid: int) -> int | None:
    try:
        with open(f"/proc/self/task/{tid}/schedstat", encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def probe_cpu_ns() -> dict[int, int]:
    """CPU ns so far of every live probe thread (the writer loops and their operation workers)."""
    out: dict[int, int] = {}
    for thread in threading.enumerate():
        if thread.name.startswith("firedrill-probe") and thread.native_id is not None:
            value = _thread_cpu_ns(thread.native_id)
            if value is not None:
                out[thread.native_id] = value
    return out


@dataclass(frozen=True)
class ProbeCost:
    rate_hz: float
    achieved_hz: float
    probe_cpu_frac: float  # of one core
    process_cpu_frac: float
    latency_p50_s: float
    latency_p99_s: float

    @property
    def per_100hz(self) -> float:
        """Share of one core used by the probe threads per 100 samples/s."""
        return self.probe_cpu_frac * 100 / self.achieved_hz if self.achieved_hz else float("nan")


def measure_probe(target: LocalPostgresTarget, rate_hz: float, seconds: float, run_id: str) -> ProbeCost:
    timeline = Timeline()
    writer = CanaryWriter(
        f"bench-{rate_hz:g}",
        target.session_factory(run_id, ProbeConfig(rate_hz=rate_hz)),
        timeline,
        ProbeConfig(rate_hz=rate_hz),
    )
    writer.start()
    try:
        time.sleep(0.5)  # connected and on its rhythm
        n0, c0 = len(timeline.snapshot()[0]), probe_cpu_ns()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        time.sleep(seconds)
        n1, c1 = len(timeline.snapshot()[0]), probe_cpu_ns()
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    finally:
        writer.stop()
    wall = t1 - t0
    probe_ns = sum(c1[tid] - c0[tid] for tid in c1.keys() & c0.keys())
    process = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    samples = [s for s in timeline.snapshot()[0] if t0 <= s.start <= t1]
    durations = sorted(s.end - s.start for s in samples)
    return ProbeCost(
        rate_hz=rate_hz,
        achieved_hz=(n1 - n0) / wall,
        probe_cpu_frac=probe_ns / 1e9 / wall,
        process_cpu_frac=process / wall,
        latency_p50_s=calibrate.percentile(durations, 50) if durations else float("nan"),
        latency_p99_s=calibrate.percentile(durations, 99) if durations else float("nan"),
    )


# ---- failover drill -----------------------------------------------------------------------------------
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[\d+\] LOG:\s+(.*)$")


def server_promotion(logfile: Path, since_wall: float) -> tuple[float, float] | None:
    """(promote request received, ready to accept connections), wall clock, from the standby's own
    log: the promotion as the server did it, free of pg_promote(wait)'s 100 ms polling."""
    requested: float | None = None
    try:
        lines = logfile.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        m = _LOG_LINE.match(line)
        if not m:
            continue
        wall = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        if wall < since_wall - 0.002:  # log times have ms resolution
            continue
        if requested is None and m.group(2).startswith("received promote request"):
            requested = wall
        elif requested is not None and m.group(2).startswith(
            "database system is ready to accept connections"
        ):
            return requested, wall
    return None


@dataclass(frozen=True)
class Failover:
    rate_hz: float
    rto_s: float | None
    promote_call_s: float | None  # pg_promote(wait => true) as the firedrill called it
    server_promotion_s: float | None  # standby log: promote request received -> ready for writes
    fault_to_request_s: float | None  # kill call + issuing the promotion
    ready_to_ack_s: float | None  # server writable -> first acknowledged probe write
    kill_call_s: float | None
    verdict: str

    @property
    def ratio(self) -> float | None:
        if self.rto_s is None or not self.server_promotion_s:
            return None
        return self.rto_s / self.server_promotion_s


def failover(bench: Bench, staging: PgStaging, rate_hz: float) -> Failover:
    run = DrillRun(
        drill="failover",
        scenario=f"bench: kill + promote at {rate_hz:g} Hz",
        ctx=bench.ctx(),
        objectives=Objectives(max_lost_writes=0),
        probe_config=ProbeConfig(rate_hz=rate_hz),
    )
    drill = FailoverDrill(LocalPostgresTarget(staging), run, FailoverSettings(baseline_s=0.5, settle_s=0.3))
    standby = staging.standby
    drill.inject(FaultSpec(FaultKind.KILL))
    drill.promote()
    record = drill.conclude()
    fault = run.timeline.first(EventKind.FAULT_ISSUED)
    rto = record.measurements.rto_s
    server = server_promotion(standby.logfile, fault.wall) if fault else None
    to_request = promotion = to_ack = None
    if fault is not None and server is not None:
        to_request = server[0] - fault.wall
        promotion = server[1] - server[0]
        to_ack = None if rto is None else rto - (server[1] - fault.wall)
    return Failover(
        rate_hz=rate_hz,
        rto_s=rto,
        promote_call_s=_phase(record, "promotion"),
        server_promotion_s=promotion,
        fault_to_request_s=to_request,
        ready_to_ack_s=to_ack,
        kill_call_s=_between(record, "fault_issued", "fault_returned"),
        verdict=record.verdict,
    )


def _phase(record: EvidenceRecord, name: str) -> float | None:
    return next((p.duration_s for p in record.measurements.phases if p.name == name), None)


def _between(record: EvidenceRecord, first: str, second: str) -> float | None:
    times = {e.kind: e.t_s for e in reversed(record.timeline)}
    if first in times and second in times:
        return times[second] - times[first]
    return None


# ---- parts --------------------------------------------------------------------------------------------
def part_staging(bench: Bench) -> None:
    pg: dict[str, list[float]] = {"start": [], "steady": [], "stop": []}
    for _ in range(bench.repeat):
        staging = PgStaging()
        t0 = time.monotonic()
        try:
            staging.start()
            t1 = time.monotonic()
            staging.wait_steady(max_lag_s=1.0, timeout_s=30)
            t2 = time.monotonic()
        finally:
            t3 = time.monotonic()
            staging.stop()
        pg["start"].append(t1 - t0)
        pg["steady"].append(t2 - t1)
        pg["stop"].append(time.monotonic() - t3)
    rd: dict[str, list[float]] = {"start": [], "steady": [], "stop": []}
    if shutil.which("redis-server"):
        for _ in range(bench.repeat):
            redis = RedisSentinelStaging()
            t0 = time.monotonic()
            try:
                redis.start()
                t1 = time.monotonic()
                redis.wait_steady(timeout_s=30)
                t2 = time.monotonic()
            finally:
                t3 = time.monotonic()
                redis.stop()
            rd["start"].append(t1 - t0)
            rd["steady"].append(t2 - t1)
            rd["stop"].append(time.monotonic() - t3)
    bench.results["staging"] = {"postgres": pg, "redis": rd}
    say(f"\n== local staging start-up (median of {bench.repeat}) ==")
    say(f"{'':<42}{'start':>10}{'to steady':>12}{'stop':>10}")
    for name, d in (("PostgreSQL primary + standby", pg), ("Redis master + 2 replicas + 3 Sentinels", rd)):
        if d["start"]:
            say(f"{name:<42}{med(d['start']):>9.2f}s{med(d['steady']):>11.2f}s{med(d['stop']):>9.2f}s")


def part_rto(bench: Bench) -> None:
    runs: list[Failover] = []
    with PgStaging() as staging:
        for _ in range(bench.repeat):
            runs.append(failover(bench, staging, 100.0))
    bench.results["rto"] = [r.__dict__ for r in runs]
    say(f"\n== local PostgreSQL failover, kill + promote, probes 100 Hz ({len(runs)} runs) ==")
    say(
        f"{'run':<5}{'firedrill RTO':>12}{'bare promote':>14}{'ratio':>7}{'fault->req':>12}"
        f"{'ready->ack':>12}{'kill call':>11}{'pg_promote()':>14}  verdict"
    )
    for i, r in enumerate(runs, 1):
        ratio = f"{r.ratio:.2f}" if r.ratio else "n/a"
        say(
            f"{i:<5}{ms(r.rto_s):>12}{ms(r.server_promotion_s):>14}{ratio:>7}{ms(r.fault_to_request_s):>12}"
            f"{ms(r.ready_to_ack_s):>12}{ms(r.kill_call_s):>11}{ms(r.promote_call_s):>14}  {r.verdict}"
        )
    ratios = [r.ratio for r in runs if r.ratio]
    if ratios:
        rto = med([r.rto_s for r in runs if r.rto_s is not None])
        bare = med([r.server_promotion_s for r in runs if r.server_promotion_s is not None])
        say(f"{'med':<5}{ms(rto):>12}{ms(bare):>14}{med(ratios):>7.2f}")
    say(
        "firedrill RTO: fault issued -> first acknowledged probe write on the standby. bare promote: the "
        "standby's own log, 'received promote request' -> 'ready to accept connections'. "
        "fault->req: the kill call (SIGKILL, wait until gone) and issuing pg_promote(); ready->ack: "
        "server writable -> the probe's first ack (reconnect, next sample; the log line comes a little "
        "after writes are possible and has ms resolution, so it can be slightly negative). "
        "pg_promote(wait) returns on PostgreSQL's own 100 ms polling, so it is not the bare figure."
    )


def part_probe(bench: Bench) -> None:
    seconds = 3.0 if bench.quick else 10.0
    with PgStaging() as staging:
        target = LocalPostgresTarget(staging)
        target.prepare_canary("bench-probe")
        cost = measure_probe(target, 100.0, seconds, "bench-probe")
    bench.results["probe"] = cost.__dict__ | {"per_100hz": cost.per_100hz, "seconds": seconds}
    say(f"\n== probe cost at 100 Hz ({seconds:g} s of steady probing, PostgreSQL INSERT per sample) ==")
    say(f"achieved rate                 {cost.achieved_hz:.1f} samples/s")
    say(f"probe threads CPU             {cost.probe_cpu_frac * 100:.2f} % of one core")
    say(f"  per 100 samples/s           {cost.per_100hz * 100:.2f} % of one core")
    say(f"whole process CPU             {cost.process_cpu_frac * 100:.2f} % of one core")
    say(f"operation latency p50 / p99   {ms(cost.latency_p50_s)} / {ms(cost.latency_p99_s)}")


def part_sweep(bench: Bench) -> None:
    seconds = 3.0 if bench.quick else 6.0
    cuts = 1 if bench.quick else 3
    rows: list[dict[str, Any]] = []
    with PgStaging() as staging:
        for rate in bench.rates:
            target = LocalPostgresTarget(staging)
            run_id = f"bench-sweep-{rate:g}"
            target.prepare_canary(run_id)
            cost = measure_probe(target, rate, seconds, run_id)
            settings = CalibrationSettings(rate_hz=rate, op_timeout_s=0.5, loss_writes=(), loss_stores=())
            run = calibrate.new_run(bench.ctx(), settings, f"bench sweep {rate:g} Hz", ())
            errors: list[float] = []
            with FaultProxy(("127.0.0.1", staging.primary.port), name="bench") as proxy:
                for i in range(cuts):
                    trial = calibrate.pg_cut_trial(run, staging, proxy, CutMode.RESET, 0.5, i + 1, settings)
                    if trial.error_s is not None:
                        errors.append(trial.error_s)
            fo = failover(bench, staging, rate)
            rows.append(
                {
                    "rate_hz": rate,
                    "achieved_hz": cost.achieved_hz,
                    "probe_cpu_pct": cost.probe_cpu_frac * 100,
                    "per_100hz_pct": cost.per_100hz * 100,
                    "process_cpu_pct": cost.process_cpu_frac * 100,
                    "failover_rto_s": fo.rto_s,
                    "failover_promote_s": fo.server_promotion_s,
                    "failover_ready_to_ack_s": fo.ready_to_ack_s,
                    "reset_cut_error_s": errors,
                }
            )
    bench.results["sweep"] = rows
    say(
        f"\n== probe rate sweep ({seconds:g} s of probing, {cuts} reset cut(s) of 500 ms, "
        "1 failover per rate) =="
    )
    say(
        f"{'rate':>6}{'achieved':>10}{'probe CPU':>11}{'per 100/s':>11}{'kill RTO':>11}{'bare prom':>11}"
        f"{'ready->ack':>12}{'cut error med':>15}{'max':>9}"
    )
    for r in rows:
        errs = r["reset_cut_error_s"]
        say(
            f"{r['rate_hz']:>4g}Hz{r['achieved_hz']:>10.1f}{r['probe_cpu_pct']:>10.2f}%"
            f"{r['per_100hz_pct']:>10.2f}%{ms(r['failover_rto_s']):>11}{ms(r['failover_promote_s']):>11}"
            f"{ms(r['failover_ready_to_ack_s']):>12}{ms(med(errs) if errs else None):>15}"
            f"{ms(max(errs) if errs else None):>9}"
        )
    say(
        "A reset cut fails probes at once, so its end is seen on the next sample: the error grows "
        "with the probe period (plus a reconnect)."
    )


def part_features(bench: Bench) -> None:
    target = ["features/failover.feature"] if bench.quick else ["features/"]
    cmd = [sys.executable, "-m", "pytest", *target, "-q", "--firedrill-out", str(bench.scratch / "features")]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    took = time.monotonic() - t0
    summary = next(
        (line for line in reversed(proc.stdout.splitlines()) if " in " in line and "passed" in line),
        proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else f"exit {proc.returncode}",
    )
    bench.results["features"] = {
        "target": target,
        "wall_s": took,
        "summary": summary,
        "exit": proc.returncode,
    }
    say(f"\n== pytest {' '.join(target)} ==")
    say(f"wall time {took:.1f} s  ({summary.strip('= ')})")


def _as_user(args: list[str], home: Path, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(home)}
    return subprocess.run(
        args,
        user=service_user(),
        env=env,
        cwd=str(home),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )


def restore_by_hand(staging: PgStaging, backup_path: Path, target_iso: str) -> tuple[float, float, float]:
    """What an operator types: cp -a, recovery settings, recovery.signal, pg_ctl start, wait until
    pg_is_in_recovery() is false (psql every 50 ms). Returns (total, copy, start to promoted), s."""
    assert staging.workdir is not None and staging.binaries is not None
    home = staging.workdir
    datadir = home / "restores" / "by-hand"
    datadir.parent.mkdir(exist_ok=True)
    user = service_user()
    if user:
        shutil.chown(datadir.parent, user, user)
    port = str(free_port())
    pg_ctl = staging.binaries.tool("pg_ctl")
    t0 = time.monotonic()
    try:
        _as_user(["cp", "-a", str(backup_path), str(datadir)], home)
        t1 = time.monotonic()
        datadir.chmod(0o700)
        conf = (
            f"\n# restore by hand\nport = {port}\narchive_mode = off\nprimary_conninfo = ''\n"
            f"synchronous_standby_names = ''\nhot_standby = off\n"
            f"restore_command = 'cp {staging.archive_dir}/%f %p'\n"
            f"recovery_target_time = '{target_iso}'\nrecovery_target_action = 'promote'\n"
        )
        with (datadir / "postgresql.conf").open("a", encoding="utf-8") as fh:
            fh.write(conf)
        _as_user(["touch", str(datadir / "recovery.signal")], home)
        _as_user([pg_ctl, "-D", str(datadir), "-l", str(home / "logs" / "by-hand.log"), "-w", "-t", "600",
                  "-o", f"-p {port}", "start"], home)  # fmt: skip
        psql = [shutil.which("psql") or "psql", "-h", "127.0.0.1", "-p", port, "-U", SUPERUSER,
                "-d", "postgres", "-tAc", "SELECT pg_is_in_recovery()"]  # fmt: skip
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            got = subprocess.run(psql, capture_output=True, text=True, timeout=10)
            if got.returncode == 0 and got.stdout.strip() == "f":
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the hand restore was not promoted within 600 s")
        t2 = time.monotonic()
        with psycopg.connect(f"host=127.0.0.1 port={port} user={SUPERUSER} dbname={DATABASE}") as conn:
            row = conn.execute("SELECT count(*) FROM bench_marker").fetchone()
        if not row or row[0] != 100:
            raise RuntimeError(f"hand restore holds {row[0] if row else '?'} marker rows, expected 100")
    finally:
        with contextlib.suppress(Exception):
            _as_user([pg_ctl, "-D", str(datadir), "-m", "immediate", "-w", "stop"], home, timeout_s=60)
        shutil.rmtree(datadir, ignore_errors=True)
    return t2 - t0, t1 - t0, t2 - t1


def part_pitr(bench: Bench) -> None:
    from firedrill.staging import pg_restore

    scale = bench.pitr_scale
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        say("\n== PITR: skipped, pgbench is not installed ==")
        return
    with PgStaging(PgStagingConfig(sync_replication=False, start_timeout_s=600)) as staging:
        primary = staging.primary
        t0 = time.monotonic()
        subprocess.run(
            [pgbench, "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p", str(primary.port),
             "-U", SUPERUSER, DATABASE],
            check=True, capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        gen_s = time.monotonic() - t0
        with staging.connect(primary) as conn:
            size_row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            conn.execute("CREATE TABLE bench_marker (i int)")
        size = int(size_row[0]) if size_row else 0  # type: ignore[call-overload]
        t0 = time.monotonic()
        backup = pg_restore.take_base_backup(staging, "bench", timeout_s=1800)
        backup_s = time.monotonic() - t0
        with staging.connect(primary) as conn:
            for i in range(100):
                conn.execute("INSERT INTO bench_marker VALUES (%s)", (i,))
            time.sleep(0.3)
            row = conn.execute("SELECT clock_timestamp()").fetchone()
            assert row is not None
            target: datetime = row[0]  # type: ignore[assignment]
            time.sleep(0.3)
            for i in range(100, 200):
                conn.execute("INSERT INTO bench_marker VALUES (%s)", (i,))
        pg_restore.archive_wal(staging, timeout_s=120)
        iso = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        # One untimed restore first: here the first copy of a fresh backup took 3-4x longer than the
        # next ones, whoever made it. Then ABBA order, each after a sync, so neither side is favoured.
        os.sync()
        restore_by_hand(staging, backup.path, iso)
        order = ["firedrill", "hand"] if bench.quick else ["firedrill", "hand", "hand", "firedrill"]
        runs: dict[str, list[tuple[float, float, float]]] = {"firedrill": [], "hand": []}
        for n, who in enumerate(order):
            os.sync()
            if who == "firedrill":
                runs[who].append(_restore_with_harness(staging, backup, iso, f"bench-firedrill-{n}"))
            else:
                runs[who].append(restore_by_hand(staging, backup.path, iso))
    firedrill = [med([r[i] for r in runs["firedrill"]]) for i in range(3)]
    hand = [med([r[i] for r in runs["hand"]]) for i in range(3)]
    bench.results["pitr"] = {
        "scale": scale,
        "db_bytes": size,
        "generate_s": gen_s,
        "base_backup_s": backup_s,
        "order": order,
        "harness_runs": runs["firedrill"],
        "hand_runs": runs["hand"],
        "harness_s": firedrill[0],
        "hand_s": hand[0],
    }
    say(f"\n== PITR, pgbench -i -s {scale}: database {size / 2**30:.2f} GiB ==")
    say(f"generate {gen_s:.1f} s, base backup (pg_basebackup -c fast) {backup_s:.1f} s")
    say(
        f"after one untimed warm-up restore, restores in the order {', '.join(order)}, each after a "
        "sync; medians, total = backup copy to promoted server"
    )
    say(f"{'':<28}{'total':>9}{'copy':>9}{'start to promoted':>19}   runs (total)")
    for label, who, fig in (
        ("firedrill (pg_restore.py)", "firedrill", firedrill),
        ("by hand (cp, pg_ctl, psql)", "hand", hand),
    ):
        each = ", ".join(f"{r[0]:.2f}s" for r in runs[who])
        say(f"{label:<28}{fig[0]:>8.2f}s{fig[1]:>8.2f}s{fig[2]:>18.2f}s   {each}")
    say(f"ratio firedrill / by hand     {firedrill[0] / hand[0]:.2f}")


def _restore_with_harness(staging: PgStaging, backup: Any, iso: str, name: str) -> tuple[float, float, float]:
    from firedrill.staging import pg_restore

    t0 = time.monotonic()
    cluster = pg_restore.restore(staging, backup, name, {"recovery_target_time": f"'{iso}'"}, timeout_s=1800)
    took = time.monotonic() - t0
    try:
        with psycopg.connect(cluster.conninfo(DATABASE)) as conn:
            got = conn.execute("SELECT count(*) FROM bench_marker").fetchone()
        if not got or got[0] != 100:
            raise RuntimeError(f"firedrill restore holds {got[0] if got else '?'} marker rows, expected 100")
    finally:
        cluster.stop()
    return took, cluster.copied_mono - cluster.started_mono, cluster.ready_mono - cluster.copied_mono


def machine() -> dict[str, Any]:
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="firedrill-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts ({', '.join(PARTS)})")
    parser.add_argument("--quick", action="store_true", help="1 repetition, short windows, PITR at scale 7")
    parser.add_argument(
        "--repeat", type=int, default=None, help="repetitions of staging/rto (default 3, quick 1)"
    )
    parser.add_argument("--rates", default="10,50,100,200", help="probe rates of the sweep, Hz")
    parser.add_argument(
        "--pitr-scale", type=int, default=None, help="pgbench scale (default 70 ~ 1 GB, quick 7)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; known: {', '.join(PARTS)}")
    runners: dict[str, Callable[[Bench], None]] = {
        "staging": part_staging,
        "rto": part_rto,
        "probe": part_probe,
        "sweep": part_sweep,
        "features": part_features,
        "pitr": part_pitr,
    }
    info = machine()
    say(f"firedrill bench {info['when']} on {info['host']}: {info['cpus']} CPUs, load {info['load_avg']}, "
        f"Python {info['python']}, kernel {info['kernel']}{' (quick)' if args.quick else ''}")  # fmt: skip
    failed = 0
    with scratch_dir() as scratch:
        bench = Bench(
            quick=args.quick,
            repeat=args.repeat or (1 if args.quick else 3),
            rates=tuple(float(r) for r in args.rates.split(",")),
            pitr_scale=args.pitr_scale or (7 if args.quick else 70),
            scratch=scratch,
        )
        bench.results["machine"] = info
        for part in parts:
            started = time.monotonic()
            try:
                runners[part](bench)
            except KeyboardInterrupt:
                say(f"\n{part}: interrupted")
                return 130
            except Exception as exc:  # one part failing must not hide the others' figures
                failed += 1
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                say(f"\n{part}: FAILED: {type(exc).__name__}: {first}")
            bench.results.setdefault("part_wall_s", {})[part] = round(time.monotonic() - started, 1)
        bench.results["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        say(f"\nload average at the end {bench.results['machine']['load_avg_end']}")
        if args.json:
            args.json.write_text(json.dumps(bench.results, indent=2, default=str) + "\n", encoding="utf-8")
            say(f"figures written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
