"""A local Redis + Sentinel staging: 1 master, 2 replicas and 3 Sentinels on free loopback ports.

Everything runs from the `redis-server` binary of this machine, in a fresh temp dir, as plain child
processes (`daemonize no`, one writable config file, data dir and log file per process). The
processes are started in their own session so a Ctrl-C to the firedrill does not kill them before
`stop()` tears them down; an `atexit` hook stops a staging the caller forgot.

This module owns the processes: config files, start, stop, kill/freeze/thaw and restart. What the
servers report (who is master, replica links, Sentinel's view), the wait for a steady topology and
putting the topology back together after a scenario are in `firedrill.staging.redis_topology`.

Timing knobs (see `RedisStagingConfig`):

* `down_after_ms` (default 1000): how long a node must be unreachable before a Sentinel flags it
  s_down. With 3 Sentinels and quorum 2, kill -9 of the master to a writable new master takes ~2-3 s.
* `failover_timeout_ms` (default 3000). Sentinel uses it for several things: the time to abort a
  stuck promotion, the time allowed to reconfigure the replicas (the failover stays
  "in progress" until then), the time before a replica following the wrong master is repointed, and
  a back-off of 2x this value before a Sentinel starts another failover of the same master after
  an attempt (its own, or one it voted for) that did not complete. A successful failover resets
  that timer (`sentinelResetMaster`). 3000 ms keeps the back-off (6 s) shorter than a
  `restore_topology()` + `wait_steady()` between two scenarios, yet long enough for the
  reconfiguration of two replicas on loopback. Redis's own default is 180000 ms (6 min back-off).

Measured here (Redis 7.0.15, defaults): start 0.15 s, steady 2.2 s after start (Sentinels find
each other through 2 s hello messages); kill -9 master to a writable new master 2.3 s; SENTINEL
FAILOVER 0.9-1.2 s; SIGSTOP master to new master 2.9-3.1 s; restore_topology 0.3-2.4 s; stop 0.2 s.
Left alone, the old master of a switchover or a woken frozen master stays master ~11 s, and
Sentinel's own view of it lags another ~10 s (its INFO period for healthy replicas).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

import redis

from firedrill.errors import ConfigError, DeadlineExceeded, StagingError, TargetError
from firedrill.staging.common import (
    RESERVED_PORTS,
    free_ports,
    make_workdir,
    pid_alive,
    remove_tree,
    signal_tree,
    wait_until,
)
from firedrill.staging.placement import Placements, placed
from firedrill.staging.redis_topology import (
    HOST,
    QUORUM,
    ControlClients,
    Role,
    SentinelTopology,
    Server,
    SteadyReport,
)

NODE_NAMES = ("redis-a", "redis-b", "redis-c")
SENTINEL_NAMES = ("sentinel-1", "sentinel-2", "sentinel-3")

AppendFsync = Literal["everysec", "always", "no"]


@dataclass(frozen=True)
class RedisStagingConfig:
    """Knobs of the local staging. Defaults give a fast, failover-ready setup."""

    master_name: str = "firedrill"
    down_after_ms: int = 1000
    failover_timeout_ms: int = 3000
    parallel_syncs: int = 1
    appendonly: bool = False
    appendfsync: AppendFsync = "everysec"
    repl_diskless_sync_delay: int = 0
    min_replicas_to_write: int = 0
    redis_server: str | None = None  # path or command name; None: `redis-server` on PATH
    command_timeout_s: float = 0.5  # socket (connect) timeout of every control command
    start_timeout_s: float = 15.0
    stop_grace_s: float = 5.0  # SIGTERM to SIGKILL
    placement: Placements = ()  # per server name: listen address + launcher (zones); default loopback

    def __post_init__(self) -> None:
        if self.appendfsync not in ("everysec", "always", "no"):
            raise ConfigError(f"appendfsync must be everysec, always or no, not {self.appendfsync!r}")
        if self.down_after_ms <= 0 or self.failover_timeout_ms <= 0:
            raise ConfigError("down_after_ms and failover_timeout_ms must be positive")
        if not self.master_name or any(c.isspace() for c in self.master_name):
            raise ConfigError(f"invalid master name {self.master_name!r}")


@dataclass(frozen=True)
class RedisNode(Server):
    """A data node of the staging. `pid` and `role` are read live (they change on restart/failover)."""

    _staging: RedisSentinelStaging = field(repr=False, compare=False)

    @property
    def host(self) -> str:
        return placed(self._staging.config.placement, self.name).host

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def pid(self) -> int | None:
        """The pid of the running process, None when it is not running."""
        return self._staging._pid(self.name)

    @property
    def role(self) -> Role:
        """`master` or `replica` as the node reports it now; `unreachable` if dead or frozen."""
        return self._staging._role(self)


class _Proc:
    """One server process: where it lives and its current Popen handle."""

    def __init__(self, server: Server, conf: Path, *, sentinel: bool) -> None:
        self.server = server
        self.name = server.name
        self.port = server.port
        self.conf = conf
        self.sentinel = sentinel
        self.popen: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def log(self) -> Path:
        return self.conf.parent / ("sentinel.log" if self.sentinel else "redis.log")

    @property
    def stdio_log(self) -> Path:
        return self.conf.parent / "stdout.log"

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None and pid_alive(self.popen.pid)

    def label(self) -> str:
        return self.server.label()


def _find_redis_server(configured: str | None) -> str:
    wanted = configured or "redis-server"
    if os.sep in wanted:
        if os.path.isfile(wanted) and os.access(wanted, os.X_OK):
            return wanted
        raise StagingError(f"redis-server not found: {wanted} is not an executable file")
    found = shutil.which(wanted)
    if found:
        return found
    searched = os.environ.get("PATH", "") or "(PATH is empty)"
    raise StagingError(f"{wanted} not found on PATH (searched: {searched}); install redis-server")


class RedisSentinelStaging:
    """1 master + 2 replicas + 3 Sentinels on loopback. Use as a context manager, or start()/stop()."""

    def __init__(self, config: RedisStagingConfig | None = None) -> None:
        self.config = config or RedisStagingConfig()
        self.workdir: Path | None = None
        self._binary: str | None = None
        self._nodes: list[RedisNode] = []
        self._procs: dict[str, _Proc] = {}
        self._clients = ControlClients(self.config.command_timeout_s)
        self._topology = self._new_topology()
        self._started = False

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> RedisSentinelStaging:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start master, replicas (waits until they are linked), then the Sentinels."""
        if self._started:
            raise StagingError("Redis staging already started")
        self._binary = _find_redis_server(self.config.redis_server)
        self._nodes, self._procs = [], {}  # a stopped staging may be started again
        self._started = True
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        cfg = self.config
        self.workdir = make_workdir("firedrill-redis-")
        ports = free_ports(len(NODE_NAMES) + len(SENTINEL_NAMES))
        node_ports = dict(zip(NODE_NAMES, ports[: len(NODE_NAMES)], strict=True))
        sentinel_ports = dict(zip(SENTINEL_NAMES, ports[len(NODE_NAMES) :], strict=True))
        master_port = node_ports[NODE_NAMES[0]]
        hosts = {p: placed(cfg.placement, n).host for n, p in (node_ports | sentinel_ports).items()}
        self._clients.hosts = {p: h for p, h in hosts.items() if h != HOST}

        for name, port in node_ports.items():
            replicaof = None if port == master_port else master_port
            conf = self._write_node_conf(name, port, replicaof)
            node = RedisNode(name, port, self)
            self._procs[name] = _Proc(node, conf, sentinel=False)
            self._nodes.append(node)
        for name, port in sentinel_ports.items():
            conf = self._write_sentinel_conf(name, port, master_port)
            self._procs[name] = _Proc(Server(name, port), conf, sentinel=True)
        self._topology = self._new_topology()

        for name in NODE_NAMES:
            self._spawn(self._procs[name], [])
        for name in NODE_NAMES:
            self._wait_ready(self._procs[name], cfg.start_timeout_s)
        # Sentinels learn the replicas from the master's INFO, polled every 10 s: start them only
        # once the replicas are attached, so they see the whole topology on their first INFO.
        master = self._procs[NODE_NAMES[0]].server
        replicas = [self._procs[n].server for n in NODE_NAMES[1:]]
        self._wait(
            "replicas attached to the master",
            lambda: self._topology.replicas_linked(master, replicas),
            cfg.start_timeout_s,
        )
        for name in SENTINEL_NAMES:
            self._spawn(self._procs[name], ["--sentinel"])
        for name in SENTINEL_NAMES:
            self._wait_ready(self._procs[name], cfg.start_timeout_s)

    def stop(self) -> None:
        """Stop every process (SIGCONT, SIGTERM, SIGKILL after the grace) and remove the temp dir.

        Idempotent; never raises because a process is already dead."""
        self._clients.close_all()
        # Sentinels first, so they do not react to the data nodes going away.
        procs = sorted(self._procs.values(), key=lambda p: not p.sentinel)
        live = [p for p in procs if p.popen is not None and p.popen.poll() is None]
        for sig in (signal.SIGCONT, signal.SIGTERM):
            for proc in live:
                assert proc.popen is not None
                with contextlib.suppress(OSError):
                    signal_tree(proc.popen.pid, sig)
        deadline = time.monotonic() + self.config.stop_grace_s
        for proc in live:
            assert proc.popen is not None
            try:
                proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    signal_tree(proc.popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=5)
            proc.frozen = False
        if self.workdir is not None:
            remove_tree(self.workdir)
            self.workdir = None
        if self._started:
            atexit.unregister(self.stop)
        self._started = False

    # ----------------------------------------------------------------- topology

    @property
    def master_name(self) -> str:
        return self.config.master_name

    @property
    def nodes(self) -> list[RedisNode]:
        return list(self._nodes)

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [(p.name, p.port) for p in self._procs.values() if p.sentinel]

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(self._clients.host(port), port) for _, port in self.sentinels]

    def pids(self) -> dict[str, int]:
        """Pid of every running process (nodes and Sentinels), by name."""
        out: dict[str, int] = {}
        for name in self._procs:
            pid = self._pid(name)
            if pid is not None:
                out[name] = pid
        return out

    def ports(self) -> list[int]:
        """Every port the staging listens on."""
        return [p.port for p in self._procs.values()]

    def node_by_port(self, port: int) -> RedisNode:
        for node in self._nodes:
            if node.port == port:
                return node
        raise StagingError(f"no Redis node of the staging listens on {HOST}:{port}")

    def node_by_name(self, name: str) -> RedisNode:
        for node in self._nodes:
            if node.name == name:
                return node
        raise StagingError(f"no Redis node named {name!r}")

    def current_master(self) -> RedisNode:
        """The master a majority of the Sentinels name (SENTINEL GET-MASTER-ADDR-BY-NAME)."""
        return self.node_by_port(self._topology.current_master().port)

    def versions(self) -> dict[str, str]:
        """redis_version (INFO server) of every process, by name."""
        return self._topology.versions()

    def wait_steady(
        self,
        timeout_s: float = 30.0,
        max_lag_bytes: int = 64 * 1024,
        *,
        strict_sentinel_view: bool = False,
        interval_s: float = 0.2,
    ) -> SteadyReport:
        """Wait until the whole topology is healthy and every Sentinel sees it so: the conditions
        are those of `SentinelTopology.wait_steady`. Raises SteadyStateNotMet at the deadline."""
        self._require_started()
        return self._topology.wait_steady(
            timeout_s, max_lag_bytes, strict_sentinel_view=strict_sentinel_view, interval_s=interval_s
        )

    def client(self, node: RedisNode) -> redis.Redis:
        """A redis-py control client for a node (short timeouts, no retries, decoded replies)."""
        return self._clients.get(self._proc_of(node).port)

    def _role(self, node: RedisNode) -> Role:
        proc = self._proc_of(node)
        if not proc.running() or proc.frozen:
            return "unreachable"
        return self._topology.role(proc.server)

    # ----------------------------------------------------------------- faults

    def kill(self, node: RedisNode) -> None:
        """SIGKILL the node (and any fork child, e.g. an AOF rewrite)."""
        proc = self._running_proc(node)
        assert proc.popen is not None
        signal_tree(proc.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=5)
        proc.frozen = False

    def freeze(self, node: RedisNode) -> None:
        """SIGSTOP the node: its sockets stay open but it answers nothing."""
        proc = self._running_proc(node)
        assert proc.popen is not None
        signal_tree(proc.popen.pid, signal.SIGSTOP)
        proc.frozen = True

    def thaw(self, node: Server) -> None:
        """SIGCONT the node (harmless if it is not frozen)."""
        proc = self._running_proc(node)
        assert proc.popen is not None
        signal_tree(proc.popen.pid, signal.SIGCONT)
        proc.frozen = False

    def is_running(self, node: Server) -> bool:
        return self._proc_of(node).running()

    def is_frozen(self, node: Server) -> bool:
        proc = self._proc_of(node)
        return proc.running() and proc.frozen

    def sentinel_failover(self, sentinel: str | None = None) -> RedisNode:
        """Ask one Sentinel for a switchover (SENTINEL FAILOVER); returns the master it replaces.

        The failover then runs asynchronously: poll `current_master()`. Refusals and the old
        master's ~10 s as a writable master: see `SentinelTopology.request_failover`."""
        self._require_started()
        return self.node_by_port(self._topology.request_failover(sentinel).port)

    def restart(self, node: Server, *, as_replica: bool = True) -> None:
        """Start the node again with the same config file and data dir (an AOF survives).

        A running node is first stopped gracefully (SIGTERM, SIGKILL after the grace).
        `as_replica=True` (default) starts it with `--replicaof` the current master (as the
        Sentinels name it), which is how a crashed node rejoins without a window as a second master;
        it is an error if the Sentinels still name this very node as master. `as_replica=False`
        starts it as a master (`--replicaof no one`), e.g. to restart the master in place for a
        persistence check. Waits until it answers PING (AOF loaded)."""
        self._require_started()
        proc = self._proc_of(node)
        if as_replica:
            master = self.current_master()
            if master.port == node.port:
                raise StagingError(
                    f"cannot restart {proc.label()} as a replica: the Sentinels still name it the "
                    "master; restart it with as_replica=False or wait for the failover"
                )
            self._start_as_replica(proc, master.port)
        else:
            self._start_proc(proc, ["--replicaof", "no", "one"])

    def start_as_replica(self, node: Server, master_port: int) -> None:
        """Start the node (again) with `--replicaof` the master on `master_port`; waits for PING."""
        self._require_started()
        self._start_as_replica(self._proc_of(node), master_port)

    def _start_as_replica(self, proc: _Proc, master_port: int) -> None:
        self._start_proc(proc, ["--replicaof", self._clients.host(master_port), str(master_port)])

    def _start_proc(self, proc: _Proc, args: list[str]) -> None:
        if proc.running():
            self._terminate(proc)
        self._spawn(proc, args)
        self._wait_ready(proc, self.config.start_timeout_s)

    def restore_topology(self, timeout_s: float = 60.0) -> SteadyReport:
        """Bring the staging back to 1 master + 2 linked replicas after a scenario, then wait_steady:
        thaw, let the Sentinels settle, restart dead nodes, repoint stray ones (the steps are those
        of `SentinelTopology.restore`). The report's waited_s is the whole restore time."""
        self._require_started()
        grace = (self.config.down_after_ms + self.config.failover_timeout_ms) / 1000 + 3.0
        return self._topology.restore(self, timeout_s, failover_grace_s=grace)

    # ----------------------------------------------------------------- process helpers

    def _new_topology(self) -> SentinelTopology:
        return SentinelTopology(
            self._clients,
            self.config.master_name,
            [p.server for p in self._node_procs()],
            [p.server for p in self._sentinel_procs()],
            down_after_ms=self.config.down_after_ms,
        )

    def _require_started(self) -> None:
        if not self._started or self.workdir is None:
            raise StagingError("Redis staging is not started")

    def _node_procs(self) -> list[_Proc]:
        return [p for p in self._procs.values() if not p.sentinel]

    def _sentinel_procs(self) -> list[_Proc]:
        return [p for p in self._procs.values() if p.sentinel]

    def _proc_of(self, node: Server) -> _Proc:
        proc = self._procs.get(node.name)
        if proc is None or proc.port != node.port:
            raise StagingError(f"{node.name} ({HOST}:{node.port}) is not a node of this staging")
        return proc

    def _running_proc(self, node: Server) -> _Proc:
        self._require_started()
        proc = self._proc_of(node)
        if not proc.running():
            raise StagingError(f"{proc.label()} is not running")
        return proc

    def _pid(self, name: str) -> int | None:
        proc = self._procs.get(name)
        if proc is None or not proc.running():
            return None
        assert proc.popen is not None
        return proc.popen.pid

    def _write_conf(self, name: str, port: int, kind: str, settings: list[str]) -> Path:
        """<workdir>/<name>/<kind>.conf: what every server of the staging shares, then `settings`."""
        assert self.workdir is not None
        d = self.workdir / name
        d.mkdir()
        host = placed(self.config.placement, name).host
        common = [f"port {port}", f"bind {host}", "daemonize no", f'dir "{d}"', f'logfile "{d / kind}.log"']
        # A zone address is only reachable from the staging's own namespaces; protected mode refuses them.
        common += [] if host.startswith("127.") else ["protected-mode no"]
        conf = d / f"{kind}.conf"
        conf.write_text("\n".join([*common, *settings]) + "\n", encoding="utf-8")
        return conf

    def _write_node_conf(self, name: str, port: int, replicaof: int | None) -> Path:
        cfg = self.config
        lines = [
            "enable-debug-command local",
            f"repl-diskless-sync-delay {cfg.repl_diskless_sync_delay}",
            f"min-replicas-to-write {cfg.min_replicas_to_write}",
        ]
        if cfg.appendonly:
            lines += ["appendonly yes", f"appendfsync {cfg.appendfsync}"]
        else:
            lines += ["appendonly no"]
        lines.append('save ""')  # no RDB snapshots: persistence, when wanted, is the AOF
        upstream = f"{self._clients.host(replicaof)} {replicaof}" if replicaof else "no one"
        lines.append(f"replicaof {upstream}")
        return self._write_conf(name, port, "redis", lines)

    def _write_sentinel_conf(self, name: str, port: int, master_port: int) -> Path:
        cfg = self.config
        mn = cfg.master_name
        lines = [
            f"sentinel monitor {mn} {self._clients.host(master_port)} {master_port} {QUORUM}",
            f"sentinel down-after-milliseconds {mn} {cfg.down_after_ms}",
            f"sentinel failover-timeout {mn} {cfg.failover_timeout_ms}",
            f"sentinel parallel-syncs {mn} {cfg.parallel_syncs}",
        ]
        # Sentinel rewrites its file (myid, known replicas and Sentinels).
        return self._write_conf(name, port, "sentinel", lines)

    def _spawn(self, proc: _Proc, extra: Sequence[str]) -> None:
        assert self._binary is not None
        if proc.port in RESERVED_PORTS:
            raise StagingError(f"refusing to start {proc.name} on reserved port {proc.port}")
        self._clients.discard(proc.port)
        launcher = placed(self.config.placement, proc.name).launcher
        try:
            # stdout/stderr only carry what Redis prints before its logfile is open (config errors).
            with open(proc.stdio_log, "ab") as out:
                proc.popen = subprocess.Popen(
                    [*launcher, self._binary, str(proc.conf), *extra],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=proc.conf.parent,
                    start_new_session=True,
                )
        except OSError as exc:
            raise StagingError(f"cannot start {proc.label()}: {exc}") from exc
        proc.frozen = False

    def _wait_ready(self, proc: _Proc, timeout_s: float) -> None:
        def ready() -> bool:
            if not proc.running():
                raise StagingError(f"{proc.label()} exited at start: {self._log_tail(proc)}")
            return self._clients.answers_ping(proc.port)

        self._wait(f"{proc.label()} answering PING", ready, timeout_s)

    def _wait(self, what: str, check: Callable[[], bool], timeout_s: float) -> None:
        def guarded() -> bool:
            try:
                return bool(check())
            except TargetError:
                return False

        try:
            wait_until(what, guarded, timeout_s=timeout_s, interval_s=0.05)
        except DeadlineExceeded as exc:
            raise StagingError(str(exc)) from exc

    def _terminate(self, proc: _Proc) -> None:
        assert proc.popen is not None
        for sig in (signal.SIGCONT, signal.SIGTERM):
            with contextlib.suppress(OSError):
                signal_tree(proc.popen.pid, sig)
        try:
            proc.popen.wait(timeout=self.config.stop_grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                signal_tree(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(timeout=5)
        proc.frozen = False

    @staticmethod
    def _log_tail(proc: _Proc, lines: int = 5) -> str:
        text: list[str] = []
        for path in (proc.stdio_log, proc.log):
            with contextlib.suppress(OSError):
                text += path.read_text(encoding="utf-8", errors="replace").splitlines()
        return " | ".join(line for line in text[-lines:] if line.strip()) or "(empty log)"


@contextlib.contextmanager
def redis_staging(config: RedisStagingConfig | None = None) -> Iterator[RedisSentinelStaging]:
    """`with redis_staging() as st:` — start, yield, always stop."""
    staging = RedisSentinelStaging(config)
    try:
        staging.start()
        yield staging
    finally:
        staging.stop()
