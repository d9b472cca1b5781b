"""Finding the PostgreSQL server binaries and running them as a non-root user.

PostgreSQL refuses to run as root; CI runs as root, so every server-side binary is run as the
`postgres` OS user (only the binaries: Python itself never re-launches as that user, because a venv in
root's home directory is not readable by it).

What every staging running those servers needs of one of them is here too: its postmaster's pid and
a connection to it.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psycopg

from firedrill.errors import StagingError

MIN_MAJOR = 13
SERVICE_USER = "postgres"


@dataclass(frozen=True, slots=True)
class PgBinaries:
    bindir: Path
    version: str  # e.g. "15.20"
    major: int

    def tool(self, name: str) -> str:
        return str(self.bindir / name)


def _bindir_candidates() -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    env_dir = os.environ.get("FIREDRILL_PG_BINDIR")
    if env_dir:
        found.append(("FIREDRILL_PG_BINDIR", Path(env_dir)))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            found.append(("pg_config --bindir", Path(out)))
        except (OSError, subprocess.SubprocessError):
            pass
    on_path = shutil.which("postgres")
    if on_path:
        found.append(("PATH", Path(on_path).resolve().parent))
    versioned = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    found.extend(("/usr/lib/postgresql", p) for p in versioned)
    return found


def find_binaries() -> PgBinaries:
    """The first directory holding postgres, initdb, pg_ctl and pg_basebackup of version 13+."""
    tried: list[str] = []
    for source, bindir in _bindir_candidates():
        needed = ["postgres", "initdb", "pg_ctl", "pg_basebackup"]
        if not all((bindir / n).is_file() for n in needed):
            tried.append(f"{bindir} ({source}: incomplete)")
            continue
        try:
            out = subprocess.run(
                [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            tried.append(f"{bindir} ({source}: {exc})")
            continue
        match = re.search(r"(\d+)(?:\.(\d+))?", out)
        if not match:
            tried.append(f"{bindir} ({source}: unreadable version {out.strip()!r})")
            continue
        major = int(match.group(1))
        if major < MIN_MAJOR:
            tried.append(f"{bindir} ({source}: version {major} < {MIN_MAJOR})")
            continue
        return PgBinaries(bindir=bindir, version=match.group(0), major=major)
    where = "; ".join(tried) if tried else "pg_config, PATH and /usr/lib/postgresql/*/bin found nothing"
    raise StagingError(f"PostgreSQL {MIN_MAJOR}+ server binaries not found: {where}")


def service_user() -> str | None:
    """The OS user to run servers as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError as exc:
        raise StagingError(
            f"running as root but there is no '{SERVICE_USER}' OS user to run PostgreSQL as"
        ) from exc
    return SERVICE_USER


def run_tool(
    args: list[str], *, user: str | None, home: Path, timeout_s: float, what: str
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL binary as the service user; a failure becomes one StagingError line."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        # pg_basebackup -R writes passfile=$HOME/.pgpass into primary_conninfo: keep it in the workdir.
        "HOME": str(home),
        "PGPASSFILE": str(home / ".pgpass"),
    }
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            user=user,
            cwd=str(home),
            start_new_session=True,  # Ctrl-C reaches the firedrill, which tears down in order
        )
    except subprocess.TimeoutExpired as exc:
        raise StagingError(f"{what}: {Path(args[0]).name} did not finish within {timeout_s:g} s") from exc
    except OSError as exc:
        raise StagingError(f"{what}: cannot run {args[0]}: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit {proc.returncode}"
        raise StagingError(f"{what} failed: {last}")
    return proc


def read_postmaster_pid(datadir: Path) -> int | None:
    """The pid on the first line of the data directory's postmaster.pid; None while there is none."""
    try:
        return int((datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, IndexError, ValueError):
        return None


class ServerNode(Protocol):
    """A PostgreSQL server of a staging, as `connect_node` needs it."""

    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str: ...

    def conninfo(self, dbname: str) -> str: ...


def connect_node(node: ServerNode, dbname: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to `node`; a failure is one StagingError naming the node."""
    try:
        return psycopg.connect(node.conninfo(dbname), autocommit=True)
    except psycopg.Error as exc:
        raise StagingError(f"cannot connect to {node.name} ({node.address}): {exc}".strip()) from exc
