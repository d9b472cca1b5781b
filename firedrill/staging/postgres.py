"""The local PostgreSQL staging: a primary, a streaming hot standby and a WAL archive.

Everything lives in one temp directory on free loopback ports and is torn down by `stop()`, which is
safe to call at any point (also half-way through `start()`, with a frozen or killed node).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from firedrill.errors import DeadlineExceeded, StagingError, SteadyStateNotMet
from firedrill.staging.common import (
    become_subreaper,
    chown_tree,
    free_port,
    make_workdir,
    pid_alive,
    pids_naming,
    reap_zombies,
    remove_tree,
    signal_tree,
    track,
    untrack,
    wait_until,
)
from firedrill.staging.pg_binaries import (
    PgBinaries,
    connect_node,
    find_binaries,
    read_postmaster_pid,
    run_tool,
    service_user,
)
from firedrill.staging.placement import LOOPBACK, Placements, command, placed

log = logging.getLogger(__name__)

SUPERUSER = "firedrill"
DATABASE = "firedrill"


@dataclass(frozen=True, slots=True)
class PgStagingConfig:
    sync_replication: bool = True  # like RDS Multi-AZ: a commit is acknowledged once the standby has it
    quorum: bool = False  # with sync_replication: synchronous_standby_names = 'ANY 1 (*)' instead of '*'
    synchronous_commit: str = "on"  # on, remote_write, remote_apply, local, off (every node, reloadable)
    start_timeout_s: float = 30.0
    extra_settings: tuple[tuple[str, str], ...] = ()
    placement: Placements = ()  # per node name: listen address + launcher (zones); default loopback
    trusted_networks: tuple[str, ...] = ()  # pg_hba "trust" for these CIDRs too (the zones' subnet)


@dataclass
class PgNode:
    name: str
    port: int
    datadir: Path
    logfile: Path
    role: str  # "primary" | "standby" | "down"
    host: str = LOOPBACK

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def postmaster_pid(self) -> int | None:
        return read_postmaster_pid(self.datadir)

    def conninfo(self, dbname: str = DATABASE) -> str:
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname={dbname} connect_timeout=2"


@dataclass(eq=False)  # identity-hashed: tracked in a set for atexit teardown
class PgStaging:
    config: PgStagingConfig = field(default_factory=PgStagingConfig)
    binaries: PgBinaries | None = None
    workdir: Path | None = None
    nodes: list[PgNode] = field(default_factory=list)
    _user: str | None = None
    _frozen: set[int] = field(default_factory=set)

    # ---- paths -------------------------------------------------------------------------------
    @property
    def archive_dir(self) -> Path:
        return self._dir("archive")

    @property
    def socket_dir(self) -> Path:
        return self._dir("sockets")

    def _dir(self, name: str) -> Path:
        if self.workdir is None:
            raise StagingError("the PostgreSQL staging is not started")
        return self.workdir / name

    @property
    def primary(self) -> PgNode:
        for node in self.nodes:
            if node.role == "primary":
                return node
        raise StagingError("the staging has no primary")

    @property
    def standby(self) -> PgNode:
        for node in self.nodes:
            if node.role == "standby":
                return node
        raise StagingError("the staging has no standby")

    def node(self, name: str) -> PgNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise StagingError(f"no node named {name!r}")

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.binaries = self.binaries or find_binaries()
        self._user = service_user()
        become_subreaper()
        track(self)
        self.workdir = make_workdir("firedrill-pg-")
        for sub in ("archive", "sockets", "logs"):
            (self.workdir / sub).mkdir()
        if self._user:
            chown_tree(self.workdir, self._user)
        self.nodes = [
            PgNode(n, free_port(), self.workdir / n, self.workdir / f"logs/{n}.log", "down", self._host(n))
            for n in ("pg-a", "pg-b")
        ]
        primary, standby = self.nodes
        self._tool(
            [
                "initdb",
                "-D",
                str(primary.datadir),
                "--no-sync",
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C",
            ],
            what="initdb",
        )
        self._write_base_config(primary.datadir)
        # Synchronous only once a standby exists, else every commit would wait forever.
        self._write_role_config(primary, primary=False)
        self._start_node(primary)
        primary.role = "primary"
        with self.connect(primary, dbname="postgres") as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        self.clone_standby(standby, source=primary)

    def clone_standby(self, node: PgNode, *, source: PgNode) -> None:
        """Make `node` a streaming standby of `source` (pg_basebackup, always -c fast)."""
        remove_tree(node.datadir)
        self._tool(
            [
                "pg_basebackup",
                "-D",
                str(node.datadir),
                "-h",
                source.host,
                "-p",
                str(source.port),
                "-U",
                SUPERUSER,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
            what=f"pg_basebackup of {node.name} from {source.name}",
            node=node.name,  # run in the new standby's zone: it must reach the source from there
        )
        self._write_role_config(node, primary=False)
        self._start_node(node)
        node.role = "standby"
        if self.config.sync_replication:
            self._write_role_config(source, primary=True)
            with self.connect(source) as conn:
                conn.execute("SELECT pg_reload_conf()")

    def reconfigure(self, config: PgStagingConfig) -> None:
        """Change the replication knobs (sync/async/quorum, synchronous_commit) of the running staging:
        each node's role file is rewritten and reloaded; no restart, no topology change."""
        self.config = config
        for node in self.nodes:
            if node.role == "down":
                continue
            self._write_role_config(node, primary=node.role == "primary")
            with self.connect(node) as conn:
                conn.execute("SELECT pg_reload_conf()")

    def stop(self) -> None:
        """Stop every node and remove the workdir. Never raises: teardown must always finish."""
        for pid in list(self._frozen):
            with contextlib.suppress(OSError):
                signal_tree(pid, signal.SIGCONT)
        self._frozen.clear()
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self._stop_node(node, mode="immediate")
            with contextlib.suppress(Exception):
                self._kill_strays(node)
        reap_zombies("postgres")
        if self.workdir is not None:
            remove_tree(self.workdir)
        self.workdir = None
        self.nodes = []
        untrack(self)

    def __enter__(self) -> PgStaging:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- faults --------------------------------------------------------------------------------
    def kill(self, node: PgNode) -> None:
        """SIGKILL the postmaster and every backend at once: a crash, nothing flushed or sent."""
        pid = self._require_pid(node)
        signal_tree(pid, signal.SIGKILL)
        node.role = "down"
        # Poll finely: the drill promotes as soon as this returns, so coarse polling would add to RTO.
        wait_until(f"{node.name} killed", lambda: not pid_alive(pid), timeout_s=10, interval_s=0.002)
        reap_zombies("postgres")

    def stop_graceful(self, node: PgNode) -> None:
        """pg_ctl stop -m fast: clients disconnected, WAL flushed and sent to the standby."""
        self._stop_node(node, mode="fast")
        node.role = "down"

    def freeze(self, node: PgNode) -> None:
        pid = self._require_pid(node)
        signal_tree(pid, signal.SIGSTOP)
        self._frozen.add(pid)

    def thaw(self, node: PgNode) -> None:
        pid = self._require_pid(node)
        signal_tree(pid, signal.SIGCONT)
        self._frozen.discard(pid)

    def promote(self, node: PgNode, timeout_s: float = 30.0) -> None:
        with self.connect(node) as conn:
            row = conn.execute(
                "SELECT pg_promote(wait => true, wait_seconds => %s)", (int(max(1, timeout_s)),)
            ).fetchone()
        if not row or not row[0]:
            raise StagingError(f"pg_promote() on {node.name} did not finish within {timeout_s:g} s")
        node.role = "primary"

    def restore_topology(self, timeout_s: float = 60.0) -> str:
        """After a failover: the old primary comes back as a standby of the new one (re-cloned, as
        a managed service rebuilds its standby). Returns what was done."""
        for pid in list(self._frozen):
            signal_tree(pid, signal.SIGCONT)
            self._frozen.discard(pid)
        down = [n for n in self.nodes if n.role == "down"]
        if not down:
            return "topology unchanged"
        new_primary = self.primary
        for node in down:
            with contextlib.suppress(StagingError):
                self._stop_node(node, mode="immediate")
            self.clone_standby(node, source=new_primary)
        self.wait_steady(max_lag_s=1.0, timeout_s=timeout_s)
        return f"{', '.join(n.name for n in down)} re-cloned as standby of {new_primary.name}"

    # ---- steady state ------------------------------------------------------------------------
    def wait_steady(self, *, max_lag_s: float, timeout_s: float) -> dict[str, str]:
        """Replication streaming and a fresh commit visible on the standby within `max_lag_s`.

        Returns what was observed, for the evidence. Raises SteadyStateNotMet naming the first
        condition that did not hold by the deadline."""
        deadline = time.monotonic() + timeout_s
        last_reason = "not checked"
        while time.monotonic() < deadline:
            try:
                return self._check_steady(max_lag_s)
            except (StagingError, psycopg.Error, DeadlineExceeded) as exc:
                last_reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            time.sleep(0.1)
        raise SteadyStateNotMet(f"PostgreSQL steady state not reached within {timeout_s:g} s: {last_reason}")

    def _check_steady(self, max_lag_s: float) -> dict[str, str]:
        primary, standby = self.primary, self.standby
        with self.connect(primary) as conn:
            rows = conn.execute(
                "SELECT state, sync_state FROM pg_stat_replication WHERE state = 'streaming'"
            ).fetchall()
            if not rows:
                raise StagingError(f"no standby is streaming from {primary.name}")
            if self.config.sync_replication and not any(r[1] in ("sync", "quorum") for r in rows):
                raise StagingError(f"standby of {primary.name} is not synchronous yet")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS firedrill_heartbeat (id int PRIMARY KEY, at timestamptz)"
            )
            marker = time.time_ns()
            conn.execute(
                "INSERT INTO firedrill_heartbeat VALUES (1, now()) ON CONFLICT (id) DO UPDATE SET at = now()"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS firedrill_marker (v bigint)")
            conn.execute("INSERT INTO firedrill_marker VALUES (%s)", (marker,))
        sent = time.monotonic()
        with self.connect(standby) as conn:
            in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if not in_recovery or not in_recovery[0]:
                raise StagingError(f"{standby.name} is not in recovery")

            def visible() -> bool:
                row = conn.execute("SELECT 1 FROM firedrill_marker WHERE v = %s", (marker,)).fetchone()
                return row is not None

            waited = wait_until(
                f"commit visible on {standby.name}", visible, timeout_s=max_lag_s, interval_s=0.005
            )
        lag = time.monotonic() - sent
        return {
            "streaming": ", ".join(f"{r[0]}/{r[1]}" for r in rows),
            "replay_lag_s": f"{max(lag, waited):.3f}",
            "max_lag_s": f"{max_lag_s:g}",
            "primary": primary.name,
            "standby": standby.name,
        }

    # ---- plumbing ------------------------------------------------------------------------------
    def connect(self, node: PgNode, *, dbname: str = DATABASE) -> psycopg.Connection[tuple[object, ...]]:
        return connect_node(node, dbname)

    def server_version(self) -> str:
        return self.binaries.version if self.binaries else "unknown"

    def _host(self, node: str) -> str:
        return placed(self.config.placement, node).host

    def _tool(
        self, args: list[str], *, what: str, timeout_s: float | None = None, node: str | None = None
    ) -> None:
        assert self.binaries is not None and self.workdir is not None
        cmd, user = command(
            placed(self.config.placement, node), [self.binaries.tool(args[0]), *args[1:]], self._user
        )
        run_tool(
            cmd,
            user=user,
            home=self.workdir,
            timeout_s=timeout_s or self.config.start_timeout_s,
            what=what,
        )

    def _write_base_config(self, datadir: Path) -> None:
        archive = self.archive_dir
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "wal_level": "replica",
            "max_wal_senders": "10",
            "wal_keep_size": "'256MB'",
            "hot_standby": "on",
            "wal_log_hints": "on",
            "track_commit_timestamp": "on",
            "archive_mode": "on",
            "archive_command": f"'test ! -f {archive}/%f && cp %p {archive}/%f'",
            # A process kill keeps the OS page cache, so fsync=off changes nothing a drill measures
            # here; it only saves seconds on this disposable staging.
            "fsync": "off",
            "synchronous_commit": "on",
            "logging_collector": "off",
            "log_line_prefix": "'%m [%p] '",
            "include_if_exists": "'firedrill_role.conf'",
        }
        settings.update(dict(self.config.extra_settings))
        with (datadir / "pg_hba.conf").open("a", encoding="utf-8") as hba:
            hba.writelines(
                f"host {db} all {net} trust\n"
                for net in self.config.trusted_networks
                for db in ("all", "replication")
            )
        lines = [f"{k} = {v}" for k, v in settings.items()]
        conf = datadir / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as fh:
            fh.write("\n# firedrill local staging\n" + "\n".join(lines) + "\n")

    def _write_role_config(self, node: PgNode, *, primary: bool) -> None:
        """Per-node settings kept out of postgresql.conf, since pg_basebackup copies that file:
        a promoted standby must not wait for a synchronous standby it does not have."""
        names = "''"
        if primary and self.config.sync_replication:
            names = "'ANY 1 (*)'" if self.config.quorum else "'*'"
        path = node.datadir / "firedrill_role.conf"
        path.write_text(
            f"synchronous_standby_names = {names}\nsynchronous_commit = '{self.config.synchronous_commit}'\n",
            encoding="utf-8",
        )
        if self._user:
            chown_tree(path, self._user)

    def _start_node(self, node: PgNode) -> None:
        """pg_ctl start; a port another process took since `free_port()` chose it (an outgoing
        connection's ephemeral port, say) is replaced by a fresh one. Any other failure names the
        server's own reason, from its log, instead of pg_ctl's "Examine the log output"."""
        for attempt in range(3):
            logged = _log_size(node.logfile)
            try:
                self._pg_ctl_start(node)
                return
            except StagingError as exc:
                self._kill_strays(node)  # a postmaster pg_ctl gave up on must not outlive the staging
                logged_now = _log_since(node.logfile, logged)
                if "Address already in use" in logged_now and attempt < 2 and node.host.startswith("127."):
                    log.info("%s: port %d was taken, retrying on another", node.name, node.port)
                    node.port = free_port()
                    continue
                reason = _server_reason(logged_now)
                raise StagingError(f"start of {node.name} failed: {reason}" if reason else str(exc)) from exc

    def _pg_ctl_start(self, node: PgNode) -> None:
        opts = f"-p {node.port} -h {node.host}"
        self._tool(
            [
                "pg_ctl",
                "-D",
                str(node.datadir),
                "-l",
                str(node.logfile),
                "-w",
                "-t",
                str(int(self.config.start_timeout_s)),
                "-o",
                opts,
                "start",
            ],
            what=f"start of {node.name}",
            node=node.name,
        )

    def _kill_strays(self, node: PgNode) -> None:
        """SIGKILL every process still running from `node`'s data directory (the postmaster's
        command line names it, whether or not it wrote postmaster.pid), and its backends."""
        strays = pids_naming(f"-D {node.datadir} ")
        for pid in strays:
            with contextlib.suppress(OSError):
                signal_tree(pid, signal.SIGKILL)
        with contextlib.suppress(DeadlineExceeded):
            wait_until(f"{node.name} killed", lambda: not any(map(pid_alive, strays)), timeout_s=10)
        reap_zombies("postgres")

    def _stop_node(self, node: PgNode, *, mode: str) -> None:
        pid = node.postmaster_pid()
        if pid is None or not pid_alive(pid):
            return
        try:
            self._tool(
                ["pg_ctl", "-D", str(node.datadir), "-m", mode, "-w", "-t", "30", "stop"],
                what=f"stop of {node.name}",
            )
        except StagingError:
            signal_tree(pid, signal.SIGKILL)
        if pid_alive(pid):
            signal_tree(pid, signal.SIGKILL)
            wait_until(f"{node.name} stopped", lambda: not pid_alive(pid), timeout_s=10)
        reap_zombies("postgres")

    def _require_pid(self, node: PgNode) -> int:
        pid = node.postmaster_pid()
        if pid is None or not pid_alive(pid):
            raise StagingError(f"{node.name} is not running")
        return pid

    def log_tail(self, node: PgNode, lines: int = 20) -> str:
        try:
            return "\n".join(node.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _log_size(logfile: Path) -> int:
    try:
        return logfile.stat().st_size
    except OSError:
        return 0


def _log_since(logfile: Path, offset: int) -> str:
    """What the server wrote to `logfile` after `offset`."""
    try:
        with logfile.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _server_reason(text: str) -> str:
    """The server's last FATAL/PANIC/ERROR line in `text` (its log), else its last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        for level in ("FATAL:", "PANIC:", "ERROR:"):
            if level in line:
                return " ".join(line[line.index(level) :].split())
    return lines[-1] if lines else ""
