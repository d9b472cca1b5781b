"""Host commands for drilling the local HA staging as if it were someone else's Patroni cluster:
`python patroni_node_ctl.py WORKDIR NODE kill|start` (what a profile's kill_command/start_command
would do with ssh and systemctl on real hosts).

kill: SIGKILL every process whose command line names WORKDIR/NODE/ (Patroni and its PostgreSQL).
start: start Patroni for NODE again, detached, as the postgres user when run as root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from firedrill.staging.common import pids_naming
from firedrill.staging.patroni import find_patroni
from firedrill.staging.pg_binaries import service_user


def main(workdir: str, node: str, action: str) -> int:
    home = Path(workdir) / node
    if action == "kill":
        for pid in pids_naming(f"{home}/"):
            os.kill(pid, signal.SIGKILL)
        return 0
    if action == "start":
        log = (Path(workdir) / "logs" / f"{node}.log").open("ab")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "PGPASSFILE": str(home / "pgpass"),
        }
        subprocess.Popen(
            [find_patroni(), str(home / "patroni.yml")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=home,
            env=env,
            user=service_user(),
            start_new_session=True,
        )
        return 0
    print(f"unknown action {action!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))
