"""HAProxy (Debian's haproxy) in front of the Patroni nodes, as applications reach a Patroni cluster:
one TCP port that forwards to whichever node answers 200 on Patroni's REST `/primary`.

Checks run every 250 ms; a node marked down has its sessions shut, so clients reconnect to the new
primary instead of hanging on the old one.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from firedrill.errors import StagingError
from firedrill.staging.common import chown_tree, free_port
from firedrill.staging.service import Service, wait_for


def find_haproxy() -> str:
    path = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/bin/haproxy") if Path(p).is_file()), None
    )
    if path is None:
        raise StagingError("haproxy not found (apt-get install haproxy; scripts/setup.sh does it as root)")
    return path


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    pg_port: int
    rest_port: int


def render_config(port: int, backends: list[Backend], *, check_interval_ms: int = 250) -> str:
    servers = "\n".join(f"  server {b.name} 127.0.0.1:{b.pg_port} check port {b.rest_port}" for b in backends)
    return f"""# firedrill HA staging: the primary, as Patroni's REST /primary says
global
  maxconn 256

defaults
  mode tcp
  timeout connect 1s
  timeout client 30m
  timeout server 30m
  timeout check 500ms

listen primary
  bind 127.0.0.1:{port}
  option httpchk
  http-check send meth GET uri /primary
  http-check expect status 200
  default-server inter {check_interval_ms}ms fastinter {check_interval_ms}ms downinter {check_interval_ms}ms fall 2 rise 1 on-marked-down shutdown-sessions
{servers}
"""  # noqa: E501


@dataclass(eq=False)
class HaProxy:
    workdir: Path
    user: str | None
    backends: list[Backend]
    port: int = 0
    service: Service | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        binary = find_haproxy()
        self.port = self.port or free_port()
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(render_config(self.port, self.backends), encoding="utf-8")
        check = subprocess.run(
            [binary, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True, timeout=10
        )
        if check.returncode != 0:
            detail = (check.stderr or check.stdout).strip().splitlines()
            raise StagingError(f"haproxy rejected its config: {detail[-1] if detail else check.returncode}")
        if self.user:
            chown_tree(cfg, self.user)
        self.service = Service(
            "haproxy",
            [binary, "-db", "-f", str(cfg)],
            self.workdir / "logs" / "haproxy.log",
            self.workdir,
            self.user,
        )
        self.service.start()
        wait_for("haproxy listening", self._listening, timeout_s=timeout_s, interval_s=0.05)

    def _listening(self) -> bool:
        if self.service is None or not self.service.alive():
            raise StagingError(f"haproxy exited: {self.service.log_tail() if self.service else ''}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.service is not None:
            self.service.kill()
