"""Where one server of the local staging runs: the address it listens on and the command prefix that
starts it. The default is loopback with no prefix (the staging as it always was); a zone places a
server inside its network namespace (`ip netns exec <namespace>`) on the zone's own address
(`firedrill.staging.zones`).

The stagings take placements by server name (`PgStagingConfig.placement`,
`RedisStagingConfig.placement`) and only ever ask two things of one: its host, and the command line
to start a binary with.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from firedrill.errors import StagingError

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Placement:
    host: str = LOOPBACK  # the address the server listens on (and is reached at)
    launcher: tuple[str, ...] = ()  # command prefix, e.g. ("/usr/sbin/ip", "netns", "exec", "<ns>")

    @property
    def on_loopback(self) -> bool:
        return self.host.startswith("127.")


DEFAULT = Placement()

# (server name, placement) pairs: hashable, so the frozen staging configs can hold them.
Placements = tuple[tuple[str, Placement], ...]


def placed(placements: Placements, name: str | None) -> Placement:
    """The placement of server `name`; the default (loopback, no prefix) when it has none."""
    if name is None:
        return DEFAULT
    return dict(placements).get(name, DEFAULT)


def command(placement: Placement, args: list[str], user: str | None) -> tuple[list[str], str | None]:
    """The command line and OS user to run `args` with at `placement`.

    Without a launcher: `args` unchanged, run as `user`. With one, the launcher must run as root
    (entering a namespace needs CAP_SYS_ADMIN), so the switch to `user` moves behind it: `setpriv`
    (util-linux) drops to the user's uid, gid and groups and execs the binary, keeping the environment
    and the process (a server started this way is still the process the staging signals)."""
    if not placement.launcher:
        return args, user
    if user is None:
        return [*placement.launcher, *args], None
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise StagingError("setpriv (util-linux) not found: needed to run a server as its user in a zone")
    drop = [setpriv, f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
    return [*placement.launcher, *drop, *args], None
