"""The `firedrill` command line.

Exit codes: 0 every objective met, 1 an objective breached, 2 bad input or a harness error (always as
one line on stderr, never a traceback).
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
from types import FrameType
from typing import NoReturn

import click

from firedrill import __version__
from firedrill.cli import audit, aws, calibrate, init, run, schedule, staging, steps
from firedrill.errors import HarnessError, first_line
from firedrill.staging.pg_binaries import find_binaries, service_user

log = logging.getLogger("firedrill")


def _fail(message: str) -> NoReturn:
    click.echo(f"firedrill: error: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="firedrill")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Disaster-recovery drills with measured RTO/RPO and auditor-grade evidence.

    `firedrill run --help` lists the drills; `firedrill steps` the step phrases a scenario can use.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )


@cli.command()
def doctor() -> None:
    """Check that this machine can run the local staging."""
    pg = find_binaries()
    click.echo(f"PostgreSQL {pg.version} at {pg.bindir} (run as {service_user() or 'current user'})")
    click.echo(f"redis-server: {shutil.which('redis-server') or 'NOT FOUND'}")
    click.echo(f"chromium (report screenshots): {shutil.which('chromium') or 'not found'}")


for _module in (run, init, steps, staging, schedule, audit, aws, calibrate):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: staging stopped, evidence written


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        cli.main(args=argv, prog_name="firedrill", standalone_mode=False)
    except click.UsageError as exc:
        _fail(exc.format_message().splitlines()[0])
    except click.exceptions.Abort:
        _fail("interrupted")
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message().splitlines()[0])
    except HarnessError as exc:
        _fail(first_line(exc))
    except KeyboardInterrupt:
        _fail("interrupted")
    sys.exit(0)


if __name__ == "__main__":
    main()
