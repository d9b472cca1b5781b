"""One long-running server process of the local staging (etcd, Patroni, HAProxy): started as the
service user, its output in a log file, and signalled, frozen or killed on purpose.

PostgreSQL's own processes are Patroni's children; `Service` only knows the process it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from firedrill.errors import HarnessError, StagingError
from firedrill.staging.common import pid_alive


@dataclass(eq=False)
class Service:
    name: str
    args: list[str]
    logfile: Path
    cwd: Path
    user: str | None = None  # run as this OS user (we are root); None: as ourselves
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    frozen: bool = False

    def start(self) -> None:
        if self.alive():
            return
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **self.env}
        try:
            with self.logfile.open("ab") as log:
                self.proc = subprocess.Popen(
                    self.args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=str(self.cwd),
                    env=env,
                    user=self.user,
                    start_new_session=True,  # Ctrl-C reaches firedrill, which tears down in order
                )
        except OSError as exc:
            raise StagingError(f"cannot start {self.name} ({self.args[0]}): {exc}") from exc
        self.frozen = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and pid_alive(self.proc.pid)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
        if sig is signal.SIGSTOP:
            self.frozen = True
        elif sig is signal.SIGCONT:
            self.frozen = False

    def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL and reap: a crash."""
        self.signal(signal.SIGKILL)
        self._reap(timeout_s)
        self.frozen = False

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (after SIGCONT, a frozen process cannot exit), SIGKILL past the timeout. Never raises."""
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self.frozen = False

    def _reap(self, timeout_s: float) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout_s)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:] if line.strip())


def wait_for(what: str, check: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.1) -> None:
    """Poll a zero-argument callable until it returns True, treating a HarnessError from it as
    'not yet'; raises StagingError naming `what` and the last reason."""
    deadline = time.monotonic() + timeout_s
    last = "not checked"
    while True:
        try:
            if check():
                return
            last = "not yet"
        except HarnessError as exc:
            last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if time.monotonic() >= deadline:
            raise StagingError(f"{what}: not reached within {timeout_s:g} s ({last})")
        time.sleep(interval_s)
