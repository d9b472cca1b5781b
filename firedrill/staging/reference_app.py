"""The reference application (examples/reference_app/app.py) as a process of the local staging: a real
web service in front of the staging's PostgreSQL (and Redis), on a free loopback port, or on a zone's
address inside the zone's network namespace (`placement`, started through `ip netns exec` like the
zone stagings' servers, `firedrill.staging.placement`).

It runs with this interpreter in its own session (a Ctrl-C to firedrill does not kill it before
teardown), is stopped with SIGTERM (SIGKILL after a grace) by `stop()`, and is remembered for the
interpreter's exit like every staging process. The application is package data
(`firedrill/reference_app/`, linked from `examples/reference_app` in the checkout), so an installed
firedrill has it too; a broken install names where it looked.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from firedrill.errors import StagingError
from firedrill.staging.common import make_workdir, remove_tree, track, untrack
from firedrill.staging.placement import DEFAULT, Placement, command

APP = Path(__file__).resolve().parents[1] / "reference_app" / "app.py"


class ReferenceApp:
    """`start()` it, use `url`, `stop()` it (idempotent, never raises)."""

    def __init__(
        self,
        *,
        pg_conninfo: str | None = None,
        sentinels: Sequence[tuple[str, int]] = (),
        redis_service: str | None = None,
        placement: Placement = DEFAULT,
        app: Path = APP,
        start_timeout_s: float = 20.0,
    ) -> None:
        if pg_conninfo is None and not sentinels:
            raise StagingError("the reference application needs a PostgreSQL conninfo or Redis Sentinels")
        self.placement = placement
        self._args = ["--listen", f"{placement.host}:0"]
        if pg_conninfo:
            self._args += ["--pg", pg_conninfo]
        if sentinels:
            self._args += ["--sentinels", ",".join(f"{h}:{p}" for h, p in sentinels)]
            self._args += ["--redis-service", redis_service or ""]
        self._app = app
        self._timeout = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self.url = ""

    def start(self) -> ReferenceApp:
        if not self._app.is_file():
            raise StagingError(
                f"the reference application is not here: {self._app} (firedrill's package data is incomplete)"
            )
        track(self)
        self._workdir = make_workdir("firedrill-app-")
        log = self._workdir / "app.log"
        with log.open("ab") as err:
            args, _ = command(self.placement, [sys.executable, str(self._app), *self._args], None)
            self._proc = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self.url = self._wait_listening(log)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, log: Path) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + self._timeout
        out = self._proc.stdout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([out], [], [], 0.1)
            if ready:
                line = out.readline().decode(errors="replace").strip()
                if line.startswith("listening on "):
                    return line.removeprefix("listening on ")
            if self._proc.poll() is not None:
                break
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        why = tail[0] if tail else "no output"
        raise StagingError(f"the reference application did not start within {self._timeout:g} s: {why}")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._workdir is not None:
            remove_tree(self._workdir)
            self._workdir = None
        untrack(self)

    def __enter__(self) -> ReferenceApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
