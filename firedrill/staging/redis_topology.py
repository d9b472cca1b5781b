"""What the servers of a Redis + Sentinel setup report about its topology, and waiting until it is healthy.

Every question goes over a control client (one per port: short socket timeouts, no retries, decoded
RESP2 replies): which node is master (as a majority of the Sentinels name it, or as all of them name it
with no failover running), each replica's role, master link and offset, and Sentinel's own view of the
master, of the other Sentinels and of each replica. `SentinelTopology.wait_steady` waits until all of it
describes one healthy topology; `request_failover` asks a Sentinel for a switchover, and `restore`
brings the topology back to one master with linked replicas after a scenario.

Nothing here starts, stops or signals a process: the staging (`firedrill.staging.redis_sentinel`) does
that, hands this module the name and port of every server, and lends `restore` its process controls
(`NodeProcesses`).

All redis-py errors are translated into `firedrill.errors` types here, naming the server and its port.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from firedrill.errors import StagingError, SteadyStateNotMet, TargetError

HOST = "127.0.0.1"
QUORUM = 2
_SENTINEL_PING_PERIOD_MS = 1000  # Sentinel's fixed timers (SENTINEL DEBUG shows them)
_SENTINEL_INFO_PERIOD_MS = 10000

Role = Literal["master", "replica", "unreachable"]


@dataclass(frozen=True)
class Server:
    """A data node or a Sentinel: its name and its loopback port."""

    name: str
    port: int

    def label(self) -> str:
        return f"{self.name} ({HOST}:{self.port})"


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


class NodeProcesses(Protocol):
    """The process controls of the data nodes that `SentinelTopology.restore` needs."""

    def is_running(self, node: Server) -> bool: ...

    def is_frozen(self, node: Server) -> bool: ...

    def thaw(self, node: Server) -> None: ...

    def restart(self, node: Server, *, as_replica: bool = True) -> None: ...

    def start_as_replica(self, node: Server, master_port: int) -> None: ...


class ControlClients:
    """One redis-py control client per loopback port: short timeouts, no retries, decoded replies."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._clients: dict[int, redis.Redis] = {}
        self.hosts: dict[int, str] = {}  # port -> listen address, where it is not loopback (zones)

    def host(self, port: int) -> str:
        return self.hosts.get(port, HOST)

    def get(self, port: int) -> redis.Redis:
        client = self._clients.get(port)
        if client is None:
            client = redis.Redis(
                host=self.host(port),
                port=port,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
                protocol=2,
            )
            self._clients[port] = client
        return client

    def discard(self, port: int) -> None:
        """Close and forget the client of `port` (its server is about to be started again)."""
        stale = self._clients.pop(port, None)
        if stale is not None:
            with contextlib.suppress(Exception):
                stale.close()

    def close_all(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()

    def answers_ping(self, port: int) -> bool:
        try:
            return bool(self.get(port).ping())
        except redis.RedisError:  # not listening yet, or LOADING the AOF
            return False

    def command(self, server: Server, *args: str) -> Any:
        try:
            # redis-py leaves execute_command unannotated; the reply shape is checked by the callers.
            execute: Callable[..., Any] = self.get(server.port).execute_command
            return execute(*args)
        except redis.RedisError as exc:
            what = " ".join(args[:2])
            raise TargetError(f"{what} on {server.label()} failed: {exc}", code=_error_code(exc)) from exc

    def info(self, server: Server, section: str) -> dict[str, Any]:
        reply = self.command(server, "INFO", section)
        if not isinstance(reply, dict):
            raise TargetError(f"INFO {section} on {server.label()}: unexpected reply {reply!r}")
        return reply


class SentinelTopology:
    """The data nodes and Sentinels of one master set, as they report themselves right now."""

    def __init__(
        self,
        clients: ControlClients,
        master_name: str,
        nodes: Sequence[Server],
        sentinels: Sequence[Server],
        *,
        down_after_ms: int,
    ) -> None:
        self._clients = clients
        self.master_name = master_name
        self.nodes = tuple(nodes)
        self.sentinels = tuple(sentinels)
        self._down_after_ms = down_after_ms

    def node_by_port(self, port: int) -> Server:
        for node in self.nodes:
            if node.port == port:
                return node
        raise StagingError(f"no Redis node of the staging listens on {HOST}:{port}")

    # ----------------------------------------------------------------- who is master

    def master_votes(self) -> dict[str, int | None]:
        """The master port each Sentinel names (SENTINEL GET-MASTER-ADDR-BY-NAME), None: no answer."""
        votes: dict[str, int | None] = {}
        for sentinel in self.sentinels:
            try:
                reply = self._sentinel_cmd(sentinel, "GET-MASTER-ADDR-BY-NAME", self.master_name)
                votes[sentinel.name] = int(_as_str(reply[1])) if reply else None
            except TargetError:
                votes[sentinel.name] = None
        return votes

    def current_master(self) -> Server:
        """The master a majority of the Sentinels name."""
        votes = self.master_votes()
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

    def settled_master(self) -> Server | None:
        """The master every reachable Sentinel (at least a majority) names, with no failover running."""
        votes = self.master_votes()
        answered = {p for p in votes.values() if p is not None}
        if len(answered) != 1 or sum(p is not None for p in votes.values()) < QUORUM:
            return None
        for sentinel in self.sentinels:
            try:
                mstate = _state_dict(self._sentinel_cmd(sentinel, "MASTER", self.master_name))
            except TargetError:
                continue
            if "failover_in_progress" in mstate.get("flags", ""):
                return None
        return self.node_by_port(next(iter(answered)))

    def role(self, node: Server) -> Role:
        """`master` or `replica` as the node reports it (INFO replication); `unreachable` if it does not."""
        try:
            role = self._clients.info(node, "replication").get("role")
        except TargetError:
            return "unreachable"
        return "master" if role == "master" else "replica"

    def replicas_linked(self, master: Server, replicas: Sequence[Server]) -> bool:
        """`master` counts exactly `replicas` as connected and each reports its link up."""
        info = self._clients.info
        return _int(info(master, "replication"), "connected_slaves", 0) == len(replicas) and all(
            info(r, "replication").get("master_link_status") == "up" for r in replicas
        )

    def make_replica_of(self, node: Server, master_port: int) -> None:
        """REPLICAOF the master on `master_port`, unless the node already replicates it."""
        info = self._clients.info(node, "replication")
        if info.get("role") != "slave" or _int(info, "master_port") != master_port:
            self._clients.command(node, "REPLICAOF", self._clients.host(master_port), str(master_port))

    def versions(self) -> dict[str, str]:
        """redis_version (INFO server) of every server, by name."""
        out: dict[str, str] = {}
        for server in (*self.nodes, *self.sentinels):
            out[server.name] = _as_str(self._clients.info(server, "server").get("redis_version", "unknown"))
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
        votes = self.master_votes()
        ports = set(votes.values())
        if None in ports:
            down = [n for n, p in votes.items() if p is None]
            return f"Sentinel(s) {', '.join(down)} unreachable or without a master address", None
        if len(ports) != 1:
            return f"Sentinels disagree on the master: {votes}", None
        master_port = next(iter(ports))
        assert master_port is not None
        master = self.node_by_port(master_port)
        where = f"{self._clients.host(master_port)}:{master_port}"
        checks.append(f"all {len(votes)} Sentinels name {master.name} ({where}) as master")

        minfo = self._clients.info(master, "replication")
        if minfo.get("role") != "master":
            return f"{master.label()} reports role {minfo.get('role')}, not master", None
        expected = len(self.nodes) - 1
        connected = _int(minfo, "connected_slaves", 0)
        if connected != expected:
            return f"{master.label()} has connected_slaves={connected}, expected {expected}", None
        master_offset = _int(minfo, "master_repl_offset", 0)
        checks.append(f"{master.name} role master, connected_slaves={connected}")

        replicas: list[ReplicaState] = []
        for node in self.nodes:
            if node.port == master_port:
                continue
            info = self._clients.info(node, "replication")
            if info.get("role") != "slave":
                return f"{node.label()} reports role {info.get('role')}, not slave", None
            if _int(info, "master_port") != master_port:
                return f"{node.label()} replicates port {info.get('master_port')}, not {master_port}", None
            link = _as_str(info.get("master_link_status", "?"))
            if link != "up":
                return f"{node.label()} master_link_status:{link}", None
            offset = _int(info, "slave_repl_offset", 0)
            lag = max(0, master_offset - offset)
            if lag > max_lag_bytes:
                return f"{node.label()} is {lag} bytes behind the master (bound {max_lag_bytes})", None
            replicas.append(ReplicaState(node.name, node.port, link, offset, lag))
        checks.append(
            "replicas linked up within the lag bound: "
            + ", ".join(f"{r.name} lag={r.lag_bytes}B" for r in replicas)
        )

        replica_ports = {r.port for r in replicas}
        other_sentinels = len(self.sentinels) - 1
        for sentinel in self.sentinels:
            mstate = _state_dict(self._sentinel_cmd(sentinel, "MASTER", self.master_name))
            flags = set(mstate.get("flags", "").split(","))
            bad = flags & {"s_down", "o_down", "failover_in_progress", "disconnected"}
            if bad:
                return f"{sentinel.label()} flags the master {sorted(bad)}", None
            others = int(mstate.get("num-other-sentinels", "0"))
            if others != other_sentinels:
                return f"{sentinel.label()} knows {others} other Sentinels, expected {other_sentinels}", None
            listed: dict[int, dict[str, str]] = {}
            for item in self._sentinel_cmd(sentinel, "REPLICAS", self.master_name):
                st = _state_dict(item)
                listed[int(st.get("port", "0"))] = st
            for port in sorted(replica_ports):
                label = self.node_by_port(port).label()
                seen = listed.get(port)
                if seen is None:
                    return f"{sentinel.label()} does not list replica {label}", None
                st = seen
                rflags = set(st.get("flags", "").split(","))
                rbad = rflags & {"s_down", "o_down", "disconnected"}
                if rbad:
                    return f"{sentinel.label()} flags replica {label} {sorted(rbad)}", None
                not_promotable = self._not_promotable(st)
                if not_promotable:
                    return f"{sentinel.label()}: replica {label} not promotable ({not_promotable})", None
                if strict and (
                    st.get("role-reported") != "slave"
                    or st.get("master-link-status") != "ok"
                    or st.get("master-port") != str(master_port)
                ):
                    return (
                        f"{sentinel.label()} last saw {label} as {st.get('role-reported')}, link "
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
        if ms("master-link-down-time") > 10 * self._down_after_ms:
            return f"master link down {ms('master-link-down-time')} ms"
        if ms("slave-priority") == 0:
            return "replica-priority 0"
        return ""

    # ----------------------------------------------------------------- failover

    def request_failover(self, sentinel: str | None = None) -> Server:
        """Ask one Sentinel for a switchover (SENTINEL FAILOVER); returns the master it replaces.

        The Sentinels (or only the one named) are asked in turn until one answers. Sentinel refusals
        become TargetError with the code kept (NOGOODSLAVE: no replica Sentinel considers healthy
        yet; INPROG: a failover is already running), and the next Sentinel is not asked.

        Sentinel does not demote the old master during a switchover: it stays a writable master
        for ~10 s (until Sentinel's +convert-to-slave), and writes it takes then are lost.
        `restore()` demotes it at once."""
        old = self.current_master()
        sentinels = list(self.sentinels)
        if sentinel is not None:
            sentinels = [s for s in sentinels if s.name == sentinel]
            if not sentinels:
                raise StagingError(f"no Sentinel named {sentinel!r}")
        last: TargetError | None = None
        for server in sentinels:
            try:
                self._sentinel_cmd(server, "FAILOVER", self.master_name)
                return old
            except TargetError as exc:
                if exc.code not in ("CONNECTION", "TIMEOUT"):
                    raise  # a refusal, not an unreachable Sentinel: do not ask the next one
                last = exc
        raise last or StagingError("no Sentinel to ask for a failover")

    def restore(self, processes: NodeProcesses, timeout_s: float, *, failover_grace_s: float) -> SteadyReport:
        """Bring the topology back to 1 master + linked replicas after a scenario, then wait_steady.

        1. Thaw every frozen node.
        2. Wait until every reachable Sentinel names the same master and none has a failover in
           progress. If that master is dead, give the Sentinels `failover_grace_s` (the staging
           passes down-after + failover-timeout + 3 s) to fail it over; if they do not (no healthy
           replica), restart it in place as master.
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
        start = time.monotonic()
        deadline = start + timeout_s
        dead_master_since: float | None = None
        unmet = "the Sentinels never settled on one master with no failover running"
        while True:
            for node in self.nodes:
                if processes.is_frozen(node):
                    processes.thaw(node)
            master = self.settled_master()
            if master is not None and not processes.is_running(master):
                now = time.monotonic()
                dead_master_since = dead_master_since or now
                unmet = f"waiting for the Sentinels to fail over the dead master {master.name}"
                if now - dead_master_since >= failover_grace_s:
                    processes.restart(master, as_replica=False)
                master = None  # look again on the next round
            if master is not None:
                self._rejoin_replicas(processes, master)
                try:
                    report = self.wait_steady(timeout_s=min(10.0, max(0.5, deadline - time.monotonic())))
                    return replace(report, waited_s=round(time.monotonic() - start, 3))
                except SteadyStateNotMet as exc:
                    unmet = str(exc)
            if time.monotonic() >= deadline:
                raise SteadyStateNotMet(f"restore_topology: not steady within {timeout_s:g} s: {unmet}")
            time.sleep(0.1)

    def _rejoin_replicas(self, processes: NodeProcesses, master: Server) -> None:
        """Steps 3 and 4 of restore; a node that does not answer is left for the next round."""
        for node in self.nodes:
            if node.port == master.port:
                continue
            if not processes.is_running(node):
                processes.start_as_replica(node, master.port)
                continue
            with contextlib.suppress(TargetError):
                self.make_replica_of(node, master.port)

    def _sentinel_cmd(self, sentinel: Server, *args: str) -> Any:
        return self._clients.command(sentinel, "SENTINEL", *args)
