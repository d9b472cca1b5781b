"""The local HA staging: 3 etcd members, 3 PostgreSQL nodes managed by Patroni 4, and HAProxy in front.

Patroni is run from its own venv (made from Debian's /usr/bin/python3 in a world-readable directory,
by scripts/setup.sh) as the `postgres` user when we are root, since it starts PostgreSQL itself.
Everything lives in one temp directory (`firedrill-ha-*`) on free loopback ports and is torn down by
`stop()`, which is safe at any point (half-way through `start()`, with frozen or killed nodes, with
etcd members stopped); `firedrill staging down` sweeps what a killed run left.

Faults are node-level, as a real node loss is: `kill_node` SIGKILLs Patroni and every PostgreSQL
process of the node at once (killing only the postmaster is not a node loss: Patroni restarts it),
`freeze_node` SIGSTOPs them all, `stop_etcd` takes etcd members away.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from firedrill.errors import HarnessError, StagingError, SteadyStateNotMet
from firedrill.staging.common import (
    become_subreaper,
    chown_tree,
    free_ports,
    make_workdir,
    pid_alive,
    reap_zombies,
    remove_tree,
    signal_tree,
    track,
    untrack,
)
from firedrill.staging.etcd import EtcdCluster, EtcdMember
from firedrill.staging.haproxy import Backend, HaProxy
from firedrill.staging.patroni_api import ClusterView, PatroniApi
from firedrill.staging.pg_binaries import (
    PgBinaries,
    connect_node,
    find_binaries,
    read_postmaster_pid,
    service_user,
)
from firedrill.staging.rest import RestError
from firedrill.staging.service import Service, wait_for

log = logging.getLogger(__name__)

SUPERUSER = "firedrill"
DATABASE = "firedrill"
NAMESPACE = "/firedrill"
WORKDIR_PREFIX = "firedrill-ha-"
# Where scripts/setup.sh puts Patroni's venv (world-readable, so the postgres user can run it).
DEFAULT_PATRONI = Path("/opt/firedrill/patroni-venv/bin/patroni")


def find_patroni() -> str:
    venv = os.environ.get("FIREDRILL_PATRONI_VENV")  # as scripts/setup.sh takes it
    from_venv = str(Path(venv) / "bin" / "patroni") if venv else None
    for candidate in (
        os.environ.get("FIREDRILL_PATRONI"),
        from_venv,
        str(DEFAULT_PATRONI),
        shutil.which("patroni"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise StagingError(
        f"Patroni not found (FIREDRILL_PATRONI, {DEFAULT_PATRONI}, PATH): run scripts/setup.sh as root"
    )


@dataclass(frozen=True, slots=True)
class PatroniStagingConfig:
    nodes: int = 3
    etcd_members: int = 3
    # Patroni 4 raises ttl below 20 to 20 (and loop_wait below 1, retry_timeout below 3) on its own.
    ttl: int = 20
    loop_wait: int = 1
    retry_timeout: int = 3
    maximum_lag_on_failover: int = 1048576
    synchronous_mode: bool = True
    scope: str = ""  # default: firedrill-<random>
    start_timeout_s: float = 120.0


@dataclass(eq=False)
class PatroniNode:
    name: str
    pg_port: int
    rest_port: int
    home: Path
    service: Service

    @property
    def datadir(self) -> Path:
        return self.home / "data"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.pg_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def api(self, timeout_s: float = 1.0) -> PatroniApi:
        return PatroniApi(self.rest_url, self.name, timeout_s)

    def postmaster_pid(self) -> int | None:
        return read_postmaster_pid(self.datadir)

    def conninfo(self, dbname: str = DATABASE) -> str:
        return f"host=127.0.0.1 port={self.pg_port} user={SUPERUSER} dbname={dbname} connect_timeout=2"


@dataclass(eq=False)  # identity-hashed: tracked in a set for atexit teardown
class PatroniStaging:
    config: PatroniStagingConfig = field(default_factory=PatroniStagingConfig)
    workdir: Path | None = None
    binaries: PgBinaries | None = None
    etcd: EtcdCluster | None = None
    haproxy: HaProxy | None = None
    nodes: list[PatroniNode] = field(default_factory=list)
    scope: str = ""
    started_s: float | None = None  # how long start() took
    _user: str | None = None
    _reaper: threading.Thread | None = None
    _reaping: threading.Event = field(default_factory=threading.Event)

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        began = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.started_s = time.monotonic() - began

    def _start(self) -> None:
        patroni = find_patroni()
        self.binaries = self.binaries or find_binaries()
        self._user = service_user()
        become_subreaper()
        track(self)
        self._start_reaper()
        self.workdir = make_workdir(WORKDIR_PREFIX)
        for sub in ("logs", "sockets"):
            (self.workdir / sub).mkdir()
        if self._user:
            chown_tree(self.workdir, self._user)
        self.scope = self.config.scope or f"firedrill-{secrets.token_hex(3)}"
        self.etcd = EtcdCluster(self.workdir, self._user, size=self.config.etcd_members, token=self.scope)
        self.etcd.start(wait=False)  # Patroni retries the DCS: no need to wait before starting it
        ports = free_ports(2 * self.config.nodes)
        for i in range(self.config.nodes):
            name = f"pg-{i + 1}"
            home = self.workdir / name
            home.mkdir()
            node = PatroniNode(
                name,
                ports[2 * i],
                ports[2 * i + 1],
                home,
                Service(
                    name,
                    [patroni, str(home / "patroni.yml")],
                    self.workdir / "logs" / f"{name}.log",
                    home,
                    self._user,
                    env={"HOME": str(home), "PGPASSFILE": str(home / "pgpass")},
                ),
            )
            self._write_patroni_config(node)
            self.nodes.append(node)
        if self._user:
            chown_tree(self.workdir, self._user)
        for node in self.nodes:  # all at once: Patroni's initialize key decides who bootstraps
            node.service.start()
        self.haproxy = HaProxy(
            self.workdir, self._user, [Backend(n.name, n.pg_port, n.rest_port) for n in self.nodes]
        )
        self.haproxy.start()  # meanwhile: it forwards nowhere until a node answers /primary
        self.etcd.wait_healthy()
        self.wait_healthy(timeout_s=self.config.start_timeout_s)
        self._create_database()

    def stop(self) -> None:
        """Kill everything and remove the workdir. Never raises: teardown must always finish."""
        if self.haproxy is not None:
            with contextlib.suppress(Exception):
                self.haproxy.stop()
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self._kill_node_processes(node)
        if self.etcd is not None:
            with contextlib.suppress(Exception):
                self.etcd.stop()
        reap_zombies("postgres")
        self._reaping.set()
        if self._reaper is not None:
            self._reaper.join(timeout=2)
            self._reaper = None
        if self.workdir is not None:
            remove_tree(self.workdir)
        self.workdir = None
        self.nodes = []
        self.etcd = None
        self.haproxy = None
        untrack(self)

    def __enter__(self) -> PatroniStaging:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what is where -----------------------------------------------------------------------
    def node(self, name: str) -> PatroniNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise StagingError(f"no Patroni node named {name!r}")

    def node_at(self, address: str) -> PatroniNode | None:
        return next((n for n in self.nodes if n.address == address), None)

    @property
    def leader_key(self) -> str:
        return f"{NAMESPACE}/{self.scope}/leader"

    @property
    def endpoint_address(self) -> str:
        """Where applications connect: HAProxy, forwarding to the node that answers /primary."""
        if self.haproxy is None:
            raise StagingError("the HA staging is not started")
        return self.haproxy.address

    def cluster(self) -> ClusterView:
        """/cluster from the first live node that answers."""
        reasons = []
        for n in self.nodes:
            if not n.service.alive() or n.service.frozen:
                continue
            try:
                return n.api(timeout_s=0.5).cluster()
            except RestError as exc:
                reasons.append(str(exc))
        raise StagingError("no Patroni node answered /cluster: " + ("; ".join(reasons) or "none running"))

    def leader(self) -> PatroniNode:
        view = self.cluster()
        if view.leader is None or view.leader.state != "running":
            raise StagingError("the cluster has no running leader")
        return self.node(view.leader.name)

    # ---- steady state ------------------------------------------------------------------------
    def wait_healthy(self, *, timeout_s: float) -> ClusterView:
        """A running leader and every other node streaming from it (one of them synchronous when
        synchronous_mode is on)."""
        seen: list[ClusterView] = []

        def healthy() -> bool:
            for n in self.nodes:
                if not n.service.alive():
                    raise StagingError(f"Patroni on {n.name} exited: {n.service.log_tail()}")
            view = self.cluster()
            seen[:] = [view]
            leader = view.leader
            if leader is None or leader.state != "running":
                raise StagingError("no running leader yet")
            streaming = [m for m in view.replicas() if m.state == "streaming"]
            if len(streaming) < len(self.nodes) - 1:
                raise StagingError(f"{len(streaming)}/{len(self.nodes) - 1} replicas streaming")
            if self.config.synchronous_mode and not any(m.role == "sync_standby" for m in streaming):
                raise StagingError("no synchronous standby yet")
            return True

        try:
            wait_for("Patroni cluster healthy", healthy, timeout_s=timeout_s, interval_s=0.2)
        except StagingError as exc:
            raise SteadyStateNotMet(str(exc)) from exc
        return seen[0]

    # ---- faults --------------------------------------------------------------------------------
    def kill_node(self, node: PatroniNode) -> None:
        """SIGKILL Patroni and the node's postmaster and backends at once: the node is lost."""
        self._kill_node_processes(node)

    def freeze_node(self, node: PatroniNode) -> None:
        """SIGSTOP Patroni and PostgreSQL: a hung node that still holds its sockets."""
        pid = node.postmaster_pid()
        node.service.signal(signal.SIGSTOP)
        if pid is not None and pid_alive(pid):
            signal_tree(pid, signal.SIGSTOP)

    def thaw_node(self, node: PatroniNode) -> None:
        pid = node.postmaster_pid()
        if pid is not None and pid_alive(pid):
            signal_tree(pid, signal.SIGCONT)
        node.service.signal(signal.SIGCONT)

    def start_node(self, node: PatroniNode) -> None:
        """Start Patroni on a node that was killed; it rejoins (pg_rewind, else a new clone)."""
        pid = node.postmaster_pid()
        if pid is not None and pid_alive(pid):
            signal_tree(pid, signal.SIGKILL)
        node.service.start()

    def stop_etcd(self, members: list[EtcdMember]) -> None:
        assert self.etcd is not None
        for m in members:
            self.etcd.stop_member(m)

    def start_etcd(self, members: list[EtcdMember]) -> None:
        assert self.etcd is not None
        for m in members:
            m.service.start()
        for m in members:
            wait_for(f"{m.name} healthy again", m.healthy, timeout_s=20)

    # ---- plumbing ------------------------------------------------------------------------------
    def _start_reaper(self) -> None:
        """Patroni detaches the postmaster, so as subreaper we become its parent: a postmaster that
        exits stays a zombie until we reap it, and Patroni, seeing it still there, waits forever
        ("demote in progress"). Reap our postgres zombies all the time the staging runs."""
        self._reaping.clear()

        def loop() -> None:
            while not self._reaping.wait(0.1):
                with contextlib.suppress(OSError):
                    reap_zombies("postgres")

        self._reaper = threading.Thread(target=loop, name="ha-staging-reaper", daemon=True)
        self._reaper.start()

    def connect(self, node: PatroniNode, *, dbname: str = DATABASE) -> psycopg.Connection[tuple[object, ...]]:
        return connect_node(node, dbname)

    def server_version(self) -> str:
        return self.binaries.version if self.binaries else "unknown"

    def _create_database(self) -> None:
        leader = self.leader()
        with self.connect(leader, dbname="postgres") as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def _kill_node_processes(self, node: PatroniNode) -> None:
        pid = node.postmaster_pid()
        # Together: Patroni first would let it see nothing, postmaster first would let it restart it.
        if pid is not None and pid_alive(pid):
            signal_tree(pid, signal.SIGCONT)
            signal_tree(pid, signal.SIGKILL)
        node.service.kill()
        if pid is not None:
            with contextlib.suppress(HarnessError):
                wait_for(
                    f"{node.name} postmaster gone", lambda: not pid_alive(pid), timeout_s=10, interval_s=0.01
                )
        reap_zombies("postgres")

    def _write_patroni_config(self, node: PatroniNode) -> None:
        assert self.workdir is not None and self.binaries is not None and self.etcd is not None
        c = self.config
        password = secrets.token_hex(12)  # trust on loopback; Patroni wants one to create the roles
        conf = {
            "scope": self.scope,
            "name": node.name,
            "namespace": NAMESPACE,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"127.0.0.1:{node.rest_port}",
                "connect_address": f"127.0.0.1:{node.rest_port}",
            },
            "etcd3": {"hosts": self.etcd.hosts, "protocol": "http"},
            "bootstrap": {
                "dcs": {
                    "ttl": c.ttl,
                    "loop_wait": c.loop_wait,
                    "retry_timeout": c.retry_timeout,
                    "maximum_lag_on_failover": c.maximum_lag_on_failover,
                    "synchronous_mode": c.synchronous_mode,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "remove_data_directory_on_rewind_failure": True,
                        "remove_data_directory_on_diverged_timelines": True,
                        "parameters": {
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "wal_log_hints": "on",
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "wal_keep_size": "256MB",
                            # A process kill keeps the OS page cache: fsync=off changes nothing
                            # a drill measures here and saves seconds on this disposable staging.
                            "fsync": "off",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "no-sync"],
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    "host replication all 127.0.0.1/32 trust",
                ],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.datadir),
                "bin_dir": str(self.binaries.bindir),
                "pgpass": str(node.home / "pgpass"),
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": password},
                    "replication": {"username": "replicator", "password": password},
                    "rewind": {"username": SUPERUSER, "password": password},
                },
                "parameters": {"unix_socket_directories": str(self.workdir / "sockets")},
                "basebackup": [{"checkpoint": "fast"}],  # else a spread checkpoint: minutes
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }
        path = node.home / "patroni.yml"  # JSON is YAML
        path.write_text(json.dumps(conf, indent=2), encoding="utf-8")
        path.chmod(0o600)
