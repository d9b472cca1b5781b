"""A local Redis + Sentinel staging: 1 master, 2 replicas and 3 Sentinels on free loopback ports.

Everything runs from the `redis-server` binary of this machine, in a fresh temp dir, as plain child
processes (`daemonize no`, one writable config file, data dir and log file per process). The
processes are started in their own session so a Ctrl-C to the firedrill does not kill them before
`stop()` tears them down; an `atexit` hook stops a staging the caller forgot.

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

All redis-py errors are translated into `firedrill.errors` types here, naming the node and its port.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from firedrill.errors import ConfigError, DeadlineExceeded, StagingError, SteadyStateNotMet, TargetError
from firedrill.staging.common import (
    RESERVED_PORTS,
    free_port,
    make_workdir,
    pid_alive,
    remove_tree,
    signal_tree,
    wait_until,
)

HOST = "127.0.0.1"
NODE_NAMES = ("redis-a", "redis-b", "redis-c")
SENTINEL_NAMES = ("sentinel-1", "sentinel-2", "sentinel-3")
QUORUM = 2
_SENTINEL_PING_PERIOD_MS = 1000  # Sentinel's fixed timers (SENTINEL DEBUG shows them)
_SENTINEL_INFO_PERIOD_MS = 10000

AppendFsync = Literal["everysec", "always", "no"]
Role = Literal["master", "replica", "unreachable"]


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

    def __post_init__(self) -> None:
        if self.appendfsync not in ("everysec", "always", "no"):
            raise ConfigError(f"appendfsync must be everysec, always or no, not {self.appendfsync!r}")
        if self.down_after_ms <= 0 or self.failover_timeout_ms <= 0:
            raise ConfigError("down_after_ms and failover_timeout_ms must be positive")
        if not self.master_name or any(c.isspace() for c in self.master_name):
            raise ConfigError(f"invalid master name {self.master_name!r}")


@dataclass(frozen=True)
class RedisNode:
    """A data node of the staging. `pid` and `role` are read live (they change on restart/failover)."""

    name: str
    port: int
    _staging: RedisSentinelStaging = field(repr=False, compare=False)

    @property
    def host(self) -> str:
        return HOST

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def pid(self) -> int | None:
        """The pid of the running process, None when it is not running."""
        return self._staging._pid(self.name)

    @property
    def role(self) -> Role:
        """`master` or `replica` as the node reports it now; `unreachable` if dead or frozen."""
        return self._staging._role(self)


@dataclass(frozen=True)
class ReplicaState:
    name: str
    port: int
    link_status: str
    offset: int
    lag_bytes: int


@dataclass(frozen=True)
class SteadyReport:
    """What `wait_steady` checked, for the evidence record."""

    master: str
    master_port: int
    master_offset: int
    replicas: tuple[ReplicaState, ...]
    sentinels: tuple[str, ...]  # every Sentinel that agreed
    checks: tuple[str, ...]
    max_lag_bytes: int
    waited_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Proc:
    """One server process: where it lives and its current Popen handle."""

    def __init__(self, name: str, port: int, conf: Path, *, sentinel: bool) -> None:
        self.name = name
        self.port = port
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
        return f"{self.name} ({HOST}:{self.port})"


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


def _error_code(exc: redis.RedisError) -> str:
    status = getattr(exc, "status_code", None)
    if isinstance(status, str) and status:
        return status
    if isinstance(exc, redis.TimeoutError):
        return "TIMEOUT"
    if isinstance(exc, redis.ConnectionError):
        return "CONNECTION"
    first = str(exc).split(" ", 1)[0]
    if first.isupper() and first.isalpha():
        return first  # e.g. NOGOODSLAVE, INPROG: codes redis-py does not strip
    return "ERR"


def _as_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _state_dict(item: Any) -> dict[str, str]:
    """A Sentinel state entry as a dict, whether it came as a RESP3 map or a RESP2 flat list."""
    if isinstance(item, Mapping):
        return {_as_str(k): _as_str(v) for k, v in item.items()}
    if isinstance(item, list | tuple):
        return {_as_str(item[i]): _as_str(item[i + 1]) for i in range(0, len(item) - 1, 2)}
    raise TypeError(f"unexpected Sentinel reply {item!r}")


def _int(info: Mapping[str, Any], key: str, default: int = -1) -> int:
    try:
        return int(_as_str(info[key]))
    except (KeyError, ValueError):
        return default


class RedisSentinelStaging:
    """1 master + 2 replicas + 3 Sentinels on loopback. Use as a context manager, or start()/stop()."""

    def __init__(self, config: RedisStagingConfig | None = None) -> None:
        self.config = config or RedisStagingConfig()
        self.workdir: Path | None = None
        self._binary: str | None = None
        self._nodes: list[RedisNode] = []
        self._procs: dict[str, _Proc] = {}
        self._clients: dict[int, redis.Redis] = {}
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
        ports = self._allocate_ports(len(NODE_NAMES) + len(SENTINEL_NAMES))
        node_ports = dict(zip(NODE_NAMES, ports[: len(NODE_NAMES)], strict=True))
        sentinel_ports = dict(zip(SENTINEL_NAMES, ports[len(NODE_NAMES) :], strict=True))
        master_port = node_ports[NODE_NAMES[0]]

        for name, port in node_ports.items():
            replicaof = None if port == master_port else master_port
            conf = self._write_node_conf(name, port, replicaof)
            self._procs[name] = _Proc(name, port, conf, sentinel=False)
            self._nodes.append(RedisNode(name, port, self))
        for name, port in sentinel_ports.items():
            conf = self._write_sentinel_conf(name, port, master_port)
            self._procs[name] = _Proc(name, port, conf, sentinel=True)

        for name in NODE_NAMES:
            self._spawn(self._procs[name], [])
        for name in NODE_NAMES:
            self._wait_ready(self._procs[name], cfg.start_timeout_s)
        # Sentinels learn the replicas from the master's INFO, polled every 10 s: start them only
        # once the replicas are attached, so they see the whole topology on their first INFO.
        master = self._procs[NODE_NAMES[0]]
        replicas = [self._procs[n] for n in NODE_NAMES[1:]]
        self._wait(
            "replicas attached to the master",
            lambda: (
                _int(self._info(master, "replication"), "connected_slaves", 0) == len(replicas)
                and all(self._info(r, "replication").get("master_link_status") == "up" for r in replicas)
            ),
            cfg.start_timeout_s,
        )
        for name in SENTINEL_NAMES:
            self._spawn(self._procs[name], ["--sentinel"])
        for name in SENTINEL_NAMES:
            self._wait_ready(self._procs[name], cfg.start_timeout_s)

    def stop(self) -> None:
        """Stop every process (SIGCONT, SIGTERM, SIGKILL after the grace) and remove the temp dir.

        Idempotent; never raises because a process is already dead."""
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
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
        return [(HOST, port) for _, port in self.sentinels]

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
        votes = self._sentinel_master_votes()
        counted = Counter(v for v in votes.values() if v is not None)
        if counted:
            port, n = counted.most_common(1)[0]
            if n >= QUORUM:
                return self.node_by_port(port)
        raise TargetError(
            f"Sentinels do not agree on a master for {self.master_name!r}: "
            + ", ".join(f"{name}={port or 'unreachable'}" for name, port in votes.items()),
            code="NO_MAJORITY",
        )

    def versions(self) -> dict[str, str]:
        """redis_version (INFO server) of every process, by name."""
        out: dict[str, str] = {}
        for proc in self._procs.values():
            out[proc.name] = _as_str(self._info(proc, "server").get("redis_version", "unknown"))
        return out

    # ----------------------------------------------------------------- steady state

    def wait_steady(
        self,
        timeout_s: float = 30.0,
        max_lag_bytes: int = 64 * 1024,
        *,
        strict_sentinel_view: bool = False,
        interval_s: float = 0.2,
    ) -> SteadyReport:
        """Wait until the whole topology is healthy and every Sentinel sees it so.

        Conditions, in this order, all on one pass: every Sentinel names the same master; it reports
        role master and `connected_slaves` == 2; every other node reports role slave of that master,
        `master_link_status:up` and an offset within `max_lag_bytes` of the master's; every
        Sentinel knows the 2 others (num-other-sentinels), does not flag the master
        (s_down/o_down/failover_in_progress), and lists each replica without
        s_down/o_down/disconnected and as promotable: what Sentinel's replica selection requires
        (ping answered < 5 s ago, INFO < 30 s old, master-link-down-time <= 10 x down-after,
        priority > 0). Without that a FAILOVER right after start fails with NOGOODSLAVE.

        `strict_sentinel_view=True` also requires each Sentinel's last INFO of each replica to show
        role slave, link ok, the right master. Sentinel polls a healthy replica's INFO only every
        10 s, so after a demotion this can take ~10 s more; the default does not wait for it.
        Raises SteadyStateNotMet naming the first unmet condition at the deadline.
        """
        self._require_started()
        start = time.monotonic()
        deadline = start + timeout_s
        while True:
            try:
                unmet, report = self._steady_pass(max_lag_bytes, strict_sentinel_view)
            except (TargetError, StagingError) as exc:
                unmet, report = str(exc), None
            if report is not None:
                return replace(report, waited_s=round(time.monotonic() - start, 3))
            if time.monotonic() >= deadline:
                raise SteadyStateNotMet(f"Redis staging not steady within {timeout_s:g} s: {unmet}")
            time.sleep(interval_s)

    def _steady_pass(self, max_lag_bytes: int, strict: bool) -> tuple[str, SteadyReport | None]:
        checks: list[str] = []
        votes = self._sentinel_master_votes()
        ports = set(votes.values())
        if None in ports:
            down = [n for n, p in votes.items() if p is None]
            return f"Sentinel(s) {', '.join(down)} unreachable or without a master address", None
        if len(ports) != 1:
            return f"Sentinels disagree on the master: {votes}", None
        master_port = next(iter(ports))
        assert master_port is not None
        master = self.node_by_port(master_port)
        mproc = self._procs[master.name]
        checks.append(f"all {len(votes)} Sentinels name {master.name} ({HOST}:{master_port}) as master")

        minfo = self._info(mproc, "replication")
        if minfo.get("role") != "master":
            return f"{mproc.label()} reports role {minfo.get('role')}, not master", None
        expected = len(self._nodes) - 1
        connected = _int(minfo, "connected_slaves", 0)
        if connected != expected:
            return f"{mproc.label()} has connected_slaves={connected}, expected {expected}", None
        master_offset = _int(minfo, "master_repl_offset", 0)
        checks.append(f"{master.name} role master, connected_slaves={connected}")

        replicas: list[ReplicaState] = []
        for node in self._nodes:
            if node.port == master_port:
                continue
            proc = self._procs[node.name]
            info = self._info(proc, "replication")
            if info.get("role") != "slave":
                return f"{proc.label()} reports role {info.get('role')}, not slave", None
            if _int(info, "master_port") != master_port:
                return f"{proc.label()} replicates port {info.get('master_port')}, not {master_port}", None
            link = _as_str(info.get("master_link_status", "?"))
            if link != "up":
                return f"{proc.label()} master_link_status:{link}", None
            offset = _int(info, "slave_repl_offset", 0)
            lag = max(0, master_offset - offset)
            if lag > max_lag_bytes:
                return f"{proc.label()} is {lag} bytes behind the master (bound {max_lag_bytes})", None
            replicas.append(ReplicaState(node.name, node.port, link, offset, lag))
        checks.append(
            "replicas linked up within the lag bound: "
            + ", ".join(f"{r.name} lag={r.lag_bytes}B" for r in replicas)
        )

        replica_ports = {r.port for r in replicas}
        for sproc in self._sentinel_procs():
            mstate = _state_dict(self._sentinel_cmd(sproc, "MASTER", self.master_name))
            flags = set(mstate.get("flags", "").split(","))
            bad = flags & {"s_down", "o_down", "failover_in_progress", "disconnected"}
            if bad:
                return f"{sproc.label()} flags the master {sorted(bad)}", None
            others = int(mstate.get("num-other-sentinels", "0"))
            if others != len(SENTINEL_NAMES) - 1:
                return f"{sproc.label()} knows {others} other Sentinels, expected 2", None
            listed: dict[int, dict[str, str]] = {}
            for item in self._sentinel_cmd(sproc, "REPLICAS", self.master_name):
                st = _state_dict(item)
                listed[int(st.get("port", "0"))] = st
            for port in sorted(replica_ports):
                label = f"{self.node_by_port(port).name} ({HOST}:{port})"
                seen = listed.get(port)
                if seen is None:
                    return f"{sproc.label()} does not list replica {label}", None
                st = seen
                rflags = set(st.get("flags", "").split(","))
                rbad = rflags & {"s_down", "o_down", "disconnected"}
                if rbad:
                    return f"{sproc.label()} flags replica {label} {sorted(rbad)}", None
                not_promotable = self._not_promotable(st)
                if not_promotable:
                    return f"{sproc.label()}: replica {label} not promotable ({not_promotable})", None
                if strict and (
                    st.get("role-reported") != "slave"
                    or st.get("master-link-status") != "ok"
                    or st.get("master-port") != str(master_port)
                ):
                    return (
                        f"{sproc.label()} last saw {label} as {st.get('role-reported')}, link "
                        f"{st.get('master-link-status')} to port {st.get('master-port')}"
                    ), None
        checks.append(
            "every Sentinel: master not flagged, 2 other Sentinels known, every replica listed "
            "without s_down/o_down/disconnected and promotable"
            + (", last INFO role slave with link ok" if strict else "")
        )
        report = SteadyReport(
            master=master.name,
            master_port=master_port,
            master_offset=master_offset,
            replicas=tuple(replicas),
            sentinels=tuple(votes),
            checks=tuple(checks),
            max_lag_bytes=max_lag_bytes,
            waited_s=0.0,
        )
        return "", report

    def _not_promotable(self, st: Mapping[str, str]) -> str:
        """Why Sentinel's replica selection (sentinelSelectSlave, master up) would skip it, or ''."""

        def ms(key: str) -> int:
            try:
                return int(st.get(key, ""))
            except ValueError:
                return 1 << 62

        if ms("last-ok-ping-reply") > 5 * _SENTINEL_PING_PERIOD_MS:
            return f"last ping reply {ms('last-ok-ping-reply')} ms ago"
        if ms("info-refresh") > 3 * _SENTINEL_INFO_PERIOD_MS:
            return f"INFO {ms('info-refresh')} ms old"
        if ms("master-link-down-time") > 10 * self.config.down_after_ms:
            return f"master link down {ms('master-link-down-time')} ms"
        if ms("slave-priority") == 0:
            return "replica-priority 0"
        return ""

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

    def thaw(self, node: RedisNode) -> None:
        """SIGCONT the node (harmless if it is not frozen)."""
        proc = self._running_proc(node)
        assert proc.popen is not None
        signal_tree(proc.popen.pid, signal.SIGCONT)
        proc.frozen = False

    def is_running(self, node: RedisNode) -> bool:
        return self._proc_of(node).running()

    def is_frozen(self, node: RedisNode) -> bool:
        proc = self._proc_of(node)
        return proc.running() and proc.frozen

    def sentinel_failover(self, sentinel: str | None = None) -> RedisNode:
        """Ask one Sentinel for a switchover (SENTINEL FAILOVER); returns the master it replaces.

        The failover then runs asynchronously: poll `current_master()`. Sentinel refusals become
        TargetError with the code kept (NOGOODSLAVE: no replica Sentinel considers healthy yet;
        INPROG: a failover is already running).

        Sentinel does not demote the old master during a switchover: it stays a writable master
        for ~10 s (until Sentinel's +convert-to-slave), and writes it takes then are lost.
        `restore_topology()` demotes it at once."""
        self._require_started()
        old = self.current_master()
        procs = self._sentinel_procs()
        if sentinel is not None:
            procs = [p for p in procs if p.name == sentinel]
            if not procs:
                raise StagingError(f"no Sentinel named {sentinel!r}")
        last: TargetError | None = None
        for sproc in procs:
            try:
                self._sentinel_cmd(sproc, "FAILOVER", self.master_name)
                return old
            except TargetError as exc:
                if exc.code not in ("CONNECTION", "TIMEOUT"):
                    raise  # a refusal, not an unreachable Sentinel: do not ask the next one
                last = exc
        raise last or StagingError("no Sentinel to ask for a failover")

    def restart(self, node: RedisNode, *, as_replica: bool = True) -> None:
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

    def _start_as_replica(self, proc: _Proc, master_port: int) -> None:
        self._start_proc(proc, ["--replicaof", HOST, str(master_port)])

    def _start_proc(self, proc: _Proc, args: list[str]) -> None:
        if proc.running():
            self._terminate(proc)
        self._spawn(proc, args)
        self._wait_ready(proc, self.config.start_timeout_s)

    def restore_topology(self, timeout_s: float = 60.0) -> SteadyReport:
        """Bring the staging back to 1 master + 2 linked replicas after a scenario, then wait_steady.

        1. Thaw every frozen node.
        2. Wait until every reachable Sentinel names the same master and none has a failover in
           progress. If that master is dead, give the Sentinels down-after + failover-timeout + 3 s
           to fail it over; if they do not (no healthy replica), restart it in place as master.
        3. Restart every other dead node with `--replicaof` that master.
        4. Send REPLICAOF <master> to any live node that is a master or follows another master.
           A woken old master (SIGSTOP past down-after, then SIGCONT), or the old master of a
           SENTINEL FAILOVER, otherwise stays master ~10 s: Sentinel only converts it once it has
           reported role master for 4 hello periods (8 s) while not down, on its next INFO.
           Sentinel would send the very same REPLICAOF then, and the writes it took meanwhile are
           discarded either way; sending it now keeps the time between two scenarios short. It is
           only sent once every Sentinel agrees on the master and none has a failover running,
           so it cannot fight a failover.
        5. wait_steady(); if it is not met, go round again (a node may have been loading) until
           the deadline. The report's waited_s is the whole restore time.
        """
        self._require_started()
        start = time.monotonic()
        deadline = start + timeout_s
        grace = (self.config.down_after_ms + self.config.failover_timeout_ms) / 1000 + 3.0
        dead_master_since: float | None = None
        unmet = "the Sentinels never settled on one master with no failover running"
        while True:
            for proc in self._node_procs():
                if proc.running() and proc.frozen:
                    assert proc.popen is not None
                    signal_tree(proc.popen.pid, signal.SIGCONT)
                    proc.frozen = False
            master = self._settled_master()
            if master is not None and not self._procs[master.name].running():
                now = time.monotonic()
                dead_master_since = dead_master_since or now
                unmet = f"waiting for the Sentinels to fail over the dead master {master.name}"
                if now - dead_master_since >= grace:
                    self.restart(master, as_replica=False)
                master = None  # look again on the next round
            if master is not None:
                self._rejoin_replicas(master)
                try:
                    report = self.wait_steady(timeout_s=min(10.0, max(0.5, deadline - time.monotonic())))
                    return replace(report, waited_s=round(time.monotonic() - start, 3))
                except SteadyStateNotMet as exc:
                    unmet = str(exc)
            if time.monotonic() >= deadline:
                raise SteadyStateNotMet(f"restore_topology: not steady within {timeout_s:g} s: {unmet}")
            time.sleep(0.1)

    def _rejoin_replicas(self, master: RedisNode) -> None:
        """Steps 3 and 4 of restore_topology; a node that does not answer is left for the next round."""
        for proc in self._node_procs():
            if proc.port == master.port:
                continue
            if not proc.running():
                self._start_as_replica(proc, master.port)
                continue
            try:
                info = self._info(proc, "replication")
                if info.get("role") != "slave" or _int(info, "master_port") != master.port:
                    self._command(proc, "REPLICAOF", HOST, str(master.port))
            except TargetError:
                continue

    def _settled_master(self) -> RedisNode | None:
        """The master every reachable Sentinel (at least a majority) names, with no failover running."""
        votes = self._sentinel_master_votes()
        answered = {p for p in votes.values() if p is not None}
        if len(answered) != 1 or sum(p is not None for p in votes.values()) < QUORUM:
            return None
        for sproc in self._sentinel_procs():
            try:
                mstate = _state_dict(self._sentinel_cmd(sproc, "MASTER", self.master_name))
            except TargetError:
                continue
            if "failover_in_progress" in mstate.get("flags", ""):
                return None
        return self.node_by_port(next(iter(answered)))

    # ----------------------------------------------------------------- client helpers

    def client(self, node: RedisNode) -> redis.Redis:
        """A redis-py control client for a node (short timeouts, no retries, decoded replies)."""
        return self._client(self._proc_of(node).port)

    def _client(self, port: int) -> redis.Redis:
        client = self._clients.get(port)
        if client is None:
            timeout = self.config.command_timeout_s
            client = redis.Redis(
                host=HOST,
                port=port,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
                protocol=2,
            )
            self._clients[port] = client
        return client

    def _command(self, proc: _Proc, *args: str) -> Any:
        try:
            # redis-py leaves execute_command unannotated; the reply shape is checked by the callers.
            execute: Callable[..., Any] = self._client(proc.port).execute_command
            return execute(*args)
        except redis.RedisError as exc:
            what = " ".join(args[:2])
            raise TargetError(f"{what} on {proc.label()} failed: {exc}", code=_error_code(exc)) from exc

    def _info(self, proc: _Proc, section: str) -> dict[str, Any]:
        reply = self._command(proc, "INFO", section)
        if not isinstance(reply, dict):
            raise TargetError(f"INFO {section} on {proc.label()}: unexpected reply {reply!r}")
        return reply

    def _sentinel_cmd(self, sproc: _Proc, *args: str) -> Any:
        return self._command(sproc, "SENTINEL", *args)

    def _sentinel_master_votes(self) -> dict[str, int | None]:
        votes: dict[str, int | None] = {}
        for sproc in self._sentinel_procs():
            try:
                reply = self._sentinel_cmd(sproc, "GET-MASTER-ADDR-BY-NAME", self.master_name)
                votes[sproc.name] = int(_as_str(reply[1])) if reply else None
            except TargetError:
                votes[sproc.name] = None
        return votes

    def _role(self, node: RedisNode) -> Role:
        proc = self._proc_of(node)
        if not proc.running() or proc.frozen:
            return "unreachable"
        try:
            role = self._info(proc, "replication").get("role")
        except TargetError:
            return "unreachable"
        return "master" if role == "master" else "replica"

    # ----------------------------------------------------------------- process helpers

    def _require_started(self) -> None:
        if not self._started or self.workdir is None:
            raise StagingError("Redis staging is not started")

    def _node_procs(self) -> list[_Proc]:
        return [p for p in self._procs.values() if not p.sentinel]

    def _sentinel_procs(self) -> list[_Proc]:
        return [p for p in self._procs.values() if p.sentinel]

    def _proc_of(self, node: RedisNode) -> _Proc:
        proc = self._procs.get(node.name)
        if proc is None or proc.port != node.port:
            raise StagingError(f"{node.name} ({HOST}:{node.port}) is not a node of this staging")
        return proc

    def _running_proc(self, node: RedisNode) -> _Proc:
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

    def _allocate_ports(self, count: int) -> list[int]:
        ports: list[int] = []
        for _ in range(count * 20):
            port = free_port()
            if port not in ports and port not in RESERVED_PORTS:
                ports.append(port)
            if len(ports) == count:
                return ports
        raise StagingError(f"could not find {count} distinct free loopback ports")

    def _write_node_conf(self, name: str, port: int, replicaof: int | None) -> Path:
        assert self.workdir is not None
        cfg = self.config
        d = self.workdir / name
        d.mkdir()
        lines = [
            f"port {port}",
            f"bind {HOST}",
            "daemonize no",
            f'dir "{d}"',
            f'logfile "{d / "redis.log"}"',
            "enable-debug-command local",
            f"repl-diskless-sync-delay {cfg.repl_diskless_sync_delay}",
            f"min-replicas-to-write {cfg.min_replicas_to_write}",
        ]
        if cfg.appendonly:
            lines += ["appendonly yes", f"appendfsync {cfg.appendfsync}"]
        else:
            lines += ["appendonly no"]
        lines.append('save ""')  # no RDB snapshots: persistence, when wanted, is the AOF
        lines.append(f"replicaof {HOST} {replicaof}" if replicaof else "replicaof no one")
        conf = d / "redis.conf"
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return conf

    def _write_sentinel_conf(self, name: str, port: int, master_port: int) -> Path:
        assert self.workdir is not None
        cfg = self.config
        d = self.workdir / name
        d.mkdir()
        mn = cfg.master_name
        lines = [
            f"port {port}",
            f"bind {HOST}",
            "daemonize no",
            f'dir "{d}"',
            f'logfile "{d / "sentinel.log"}"',
            f"sentinel monitor {mn} {HOST} {master_port} {QUORUM}",
            f"sentinel down-after-milliseconds {mn} {cfg.down_after_ms}",
            f"sentinel failover-timeout {mn} {cfg.failover_timeout_ms}",
            f"sentinel parallel-syncs {mn} {cfg.parallel_syncs}",
        ]
        conf = d / "sentinel.conf"  # Sentinel rewrites it (myid, known replicas and Sentinels)
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return conf

    def _spawn(self, proc: _Proc, extra: Sequence[str]) -> None:
        assert self._binary is not None
        if proc.port in RESERVED_PORTS:
            raise StagingError(f"refusing to start {proc.name} on reserved port {proc.port}")
        stale = self._clients.pop(proc.port, None)
        if stale is not None:
            with contextlib.suppress(Exception):
                stale.close()
        try:
            # stdout/stderr only carry what Redis prints before its logfile is open (config errors).
            with open(proc.stdio_log, "ab") as out:
                proc.popen = subprocess.Popen(
                    [self._binary, str(proc.conf), *extra],
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
            try:
                return bool(self._client(proc.port).ping())
            except redis.RedisError:  # not listening yet, or LOADING the AOF
                return False

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
