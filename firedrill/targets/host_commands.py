"""Host faults on systems firedrill did not start: only the commands a profile names, as argument
lists (never through a shell), with `{node}` replaced by the node the fault is for."""

from __future__ import annotations

import subprocess
from typing import Protocol

from firedrill.config_ha import NODE_PLACEHOLDER, Command
from firedrill.errors import ConfigError, TargetError
from firedrill.targets.base import FaultKind


class HostFaultCommands(Protocol):
    """The host commands a profile may name (its Patroni or Sentinel section alike)."""

    @property
    def kill_command(self) -> Command: ...

    @property
    def freeze_command(self) -> Command: ...


def host_command_faults(commands: HostFaultCommands) -> set[FaultKind]:
    """The faults a host command does: kill and freeze, each only where the profile names its command."""
    faults = set()
    if commands.kill_command:
        faults.add(FaultKind.KILL)
    if commands.freeze_command:
        faults.add(FaultKind.FREEZE)
    return faults


def run_host_command(command: tuple[str, ...], node: str, what: str, *, timeout_s: float) -> str:
    """Run the profile's `<what>_command` for `node`; returns the command line that ran. A failure,
    a timeout or a non-zero exit is one TargetError line (the command's last line of output)."""
    if not command:
        raise ConfigError(f"the profile names no {what}_command")
    args = [a.replace(NODE_PLACEHOLDER, node) for a in command]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetError(f"{what} command {args[0]} failed: {str(exc).splitlines()[0]}") from exc
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        raise TargetError(f"{what} command {args[0]} exited {proc.returncode}: {last[-1] if last else ''}")
    return " ".join(args)
