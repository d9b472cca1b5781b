"""Benchmark: start-up of the local HA staging (3 etcd, 3 Patroni/PostgreSQL, HAProxy) by firedrill,
next to the same etcd + Patroni cluster started by hand in the same run, and their ratio.

"By hand" is what an operator would do: write the same etcd flags and Patroni YAML, start the six
processes with plain `subprocess.Popen`, and poll Patroni's REST `/cluster` until there is a running
leader and every replica streams (no HAProxy, no database creation, no firedrill helper). Both are
torn down after each repetition, also on failure. Not a timed test: it prints figures from one run.

Run: `.venv/bin/python bench/bench_ha.py [--repeat 2] [--json out.json]` (as root: servers run as
`postgres`; needs scripts/setup.sh's etcd, haproxy and Patroni venv).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from firedrill.staging.common import chown_tree, free_ports
from firedrill.staging.etcd import find_etcd
from firedrill.staging.patroni import PatroniStaging, find_patroni
from firedrill.staging.pg_binaries import find_binaries, service_user


def firedrill_start() -> dict[str, float]:
    began = time.monotonic()
    staging = PatroniStaging()
    try:
        staging.start()
        up = time.monotonic() - began
    finally:
        stopping = time.monotonic()
        staging.stop()
    return {"start_s": up, "teardown_s": time.monotonic() - stopping}


def _cluster_ok(rest_port: int, nodes: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{rest_port}/cluster", timeout=0.5) as r:
            members = json.loads(r.read())["members"]
    except (OSError, ValueError, KeyError):
        return False
    leader = [m for m in members if m.get("role") == "leader" and m.get("state") == "running"]
    streaming = [m for m in members if m.get("state") == "streaming"]
    return len(leader) == 1 and len(streaming) == nodes - 1


def by_hand_start(nodes: int = 3) -> dict[str, float]:
    user = service_user()
    work = Path(tempfile.mkdtemp(prefix="firedrill-ha-bench-"))
    work.chmod(0o755)
    procs: list[subprocess.Popen[bytes]] = []
    began = time.monotonic()
    try:
        ports = free_ports(2 * 3 + 2 * nodes)
        etcd = find_etcd()
        cluster = ",".join(f"e{i}=http://127.0.0.1:{ports[2 * i + 1]}" for i in range(3))
        (work / "logs").mkdir()
        for n in range(nodes):
            (work / f"n{n}").mkdir()
        if user:
            chown_tree(work, user)
        log = (work / "logs" / "all.log").open("ab")
        for i in range(3):
            c, p = ports[2 * i], ports[2 * i + 1]
            cu, pu = f"http://127.0.0.1:{c}", f"http://127.0.0.1:{p}"
            args = [etcd, "--name", f"e{i}", "--data-dir", str(work / f"e{i}"),
                    "--listen-client-urls", cu, "--advertise-client-urls", cu,
                    "--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
                    "--initial-cluster", cluster, "--initial-cluster-state", "new",
                    "--log-level", "warn"]  # fmt: skip
            procs.append(subprocess.Popen(args, stdout=log, stderr=log, user=user, cwd=work))
        hosts = ",".join(f"127.0.0.1:{ports[2 * i]}" for i in range(3))
        bindir = str(find_binaries().bindir)
        for n in range(nodes):
            pg, rest = ports[6 + 2 * n], ports[7 + 2 * n]
            home = work / f"n{n}"
            conf = {
                "scope": "bench", "name": f"n{n}", "namespace": "/bench",
                "restapi": {"listen": f"127.0.0.1:{rest}", "connect_address": f"127.0.0.1:{rest}"},
                "etcd3": {"hosts": hosts},
                "bootstrap": {
                    "dcs": {"ttl": 20, "loop_wait": 1, "retry_timeout": 3, "synchronous_mode": True,
                            "postgresql": {"use_pg_rewind": True,
                                           "parameters": {"wal_log_hints": "on", "fsync": "off"}}},
                    "initdb": [{"encoding": "UTF8"}, "no-sync"],
                    "pg_hba": ["local all all trust", "host all all 127.0.0.1/32 trust",
                               "host replication all 127.0.0.1/32 trust"],
                },
                "postgresql": {
                    "listen": f"127.0.0.1:{pg}", "connect_address": f"127.0.0.1:{pg}",
                    "data_dir": str(home / "data"), "bin_dir": bindir, "pgpass": str(home / "pgpass"),
                    "authentication": {"superuser": {"username": "postgres", "password": "x"},
                                       "replication": {"username": "replicator", "password": "x"}},
                    "parameters": {"unix_socket_directories": str(home)},
                    "basebackup": [{"checkpoint": "fast"}],
                },
            }  # fmt: skip
            (home / "patroni.yml").write_text(json.dumps(conf))
            if user:
                chown_tree(home, user)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
            procs.append(
                subprocess.Popen(
                    [find_patroni(), str(home / "patroni.yml")],
                    stdout=log,
                    stderr=log,
                    user=user,
                    cwd=home,
                    env=env,
                )
            )
        deadline = time.monotonic() + 180
        while not _cluster_ok(ports[7], nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the hand-started cluster did not become healthy within 180 s")
            time.sleep(0.2)
        up = time.monotonic() - began
    finally:
        stopping = time.monotonic()
        _kill_all(procs, work)
        shutil.rmtree(work, ignore_errors=True)
    return {"start_s": up, "teardown_s": time.monotonic() - stopping}


def _kill_all(procs: list[subprocess.Popen[bytes]], work: Path) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=10)
    # PostgreSQL outlives a killed Patroni: stop every postmaster of this work dir.
    for pidfile in work.glob("n*/data/postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pidfile.read_text().splitlines()[0]), signal.SIGKILL)
    time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    fd: list[dict[str, float]] = []
    hand: list[dict[str, float]] = []
    for i in range(args.repeat):  # alternate, so drift in machine load hits both alike
        for name, fn, out in (("firedrill", firedrill_start, fd), ("by hand", by_hand_start, hand))[
            :: 1 if i % 2 == 0 else -1
        ]:
            result = fn()
            out.append(result)
            print(f"  {name:<10} start {result['start_s']:6.2f} s   teardown {result['teardown_s']:5.2f} s")
    f = statistics.median(r["start_s"] for r in fd)
    h = statistics.median(r["start_s"] for r in hand)
    print(
        f"HA staging start (median of {args.repeat}): firedrill {f:.2f} s, by hand {h:.2f} s, "
        f"ratio {f / h:.2f}"
    )
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"firedrill": fd, "by_hand": hand, "ratio": f / h}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
