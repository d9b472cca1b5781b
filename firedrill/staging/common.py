"""Small shared pieces of the local staging: loopback ports, temp dirs, waiting, processes."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from firedrill.errors import DeadlineExceeded, StagingError


class Stoppable(Protocol):
    def stop(self) -> None: ...


_LIVE: set[Stoppable] = set()


def track(staging: Stoppable) -> None:
    """Remember a started staging so an interpreter exit that skipped teardown still stops it."""
    _LIVE.add(staging)


def untrack(staging: Stoppable) -> None:
    _LIVE.discard(staging)


@atexit.register
def _stop_all() -> None:
    for staging in list(_LIVE):
        with contextlib.suppress(Exception):
            staging.stop()
    _LIVE.clear()


# Ports the machine's own services use: the staging never takes them, whatever the kernel offers.
RESERVED_PORTS = frozenset({5432, 6379, 26379, 3306, 5672, 1883, 4222})


def free_port() -> int:
    """A free TCP port on 127.0.0.1, never one of the standard service ports."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port
    raise StagingError("no free loopback port found")


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1, none of them a standard service port."""
    ports: list[int] = []
    for _ in range(count * 20):
        port = free_port()
        if port not in ports and port not in RESERVED_PORTS:
            ports.append(port)
        if len(ports) == count:
            return ports
    raise StagingError(f"could not find {count} distinct free loopback ports")


def wait_until(what: str, check: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05) -> float:
    """Poll `check` until it returns True; returns the seconds waited. Raises DeadlineExceeded."""
    start = time.monotonic()
    deadline = start + timeout_s
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(f"{what}: not reached within {timeout_s:g} s")
        time.sleep(interval_s)


OWNER_FILE = "firedrill-owner.pid"


def workdir_owner(path: Path) -> int | None:
    try:
        return int((path / OWNER_FILE).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def make_workdir(prefix: str, owner: str | None = None) -> Path:
    """A fresh temp dir, world-traversable so a service user can reach its own subdirectories."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    # Who owns it: `firedrill staging down` sweeps only directories whose owner is gone.
    (path / OWNER_FILE).write_text(f"{os.getpid()}\n", encoding="ascii")
    if owner:
        chown_tree(path, owner)
    return path


def chown_tree(path: Path, owner: str) -> None:
    pw = pwd.getpwnam(owner)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pids_naming(needle: str) -> list[int]:
    """Every other process whose command line contains `needle` (a staging's directory, say): the
    servers a killed run left, or those a host command started outside the staging's knowledge."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = (
                Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc (no psutil needed for one field)."""
    kids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def signal_tree(pid: int, sig: signal.Signals) -> None:
    """Signal a process and its direct children at once (a server crash takes all its workers)."""
    targets = [pid, *children_of(pid)]
    for target in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, sig)


def become_subreaper() -> None:
    """Adopt orphaned descendants (Linux PR_SET_CHILD_SUBREAPER).

    pg_ctl detaches the postmaster; when it is killed, its processes are re-parented to PID 1, and
    where PID 1 does not reap (containers, micro-VMs) they stay zombies that still answer kill(0), so
    PostgreSQL refuses to reuse their socket. As subreaper we can reap them ourselves."""
    pr_set_child_subreaper = 36
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def reap_zombies(comm: str) -> int:
    """waitpid() our zombie children named `comm` only, so no other module's Popen loses its status."""
    reaped = 0
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                raw = fh.read()
        except OSError:
            continue
        name = raw[raw.find("(") + 1 : raw.rfind(")")]
        fields = raw.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and int(fields[1]) == me and name == comm:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry), os.WNOHANG)
                reaped += 1
    return reaped
