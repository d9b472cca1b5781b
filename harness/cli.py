"""The `firedrill` command line.

Exit codes: 0 every objective met, 1 an objective breached, 2 bad input or a harness error (always as
one line on stderr, never a traceback).
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import NoReturn

import click

from harness import __version__
from harness.errors import HarnessError
from harness.evidence import EvidenceRecord

log = logging.getLogger("firedrill")


def _fail(message: str) -> NoReturn:
    click.echo(f"firedrill: error: {message}", err=True)
    sys.exit(2)


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "not measured"
    return f"{value:.3f} s" if value < 120 else f"{value:.1f} s ({value / 60:.1f} min)"


def print_summary(records: list[EvidenceRecord], paths: list[Path]) -> None:
    for record, path in zip(records, paths, strict=True):
        m = record.measurements
        click.echo(f"\n[{record.verdict.upper()}] {record.drill}: {record.scenario}")
        if record.error:
            click.echo(f"  error: {record.error}")
        for v in record.verdicts:
            measured = (
                "not measured"
                if v.measured is None
                else (_fmt_s(v.measured) if v.unit == "s" else f"{v.measured:g} {v.unit}")
            )
            click.echo(
                f"  {'ok ' if v.met else 'NOT'} {v.objective:<12} measured {measured:<22} "
                f"limit {v.limit:g} {v.unit}"
            )
        if m.lost_writes is not None:
            click.echo(
                f"  lost writes  {m.lost_writes} of {m.acknowledged_writes} acknowledged"
                + (f" (seq {', '.join(map(str, m.lost_seqs[:10]))})" if m.lost_seqs else "")
            )
        for c in record.checks:
            if not c.passed:
                label = "FAILED check" if c.blocking else "finding"
                detail = c.detail if len(c.detail) <= 100 else c.detail[:97] + "..."
                click.echo(f"  {label:<12} {c.name}: {detail}")
        if m.outage_seen is False:
            click.echo("  no outage seen by the client")
        report = path.parent / "report.html"
        click.echo(f"  report       {report if report.exists() else path}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="firedrill")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Disaster-recovery drills with measured RTO/RPO and auditor-grade evidence."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )


@cli.command()
@click.argument("drills", nargs=-1)
@click.option("--env", "environment", default="local", show_default=True, help="Environment profile.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Profiles file.")
@click.option("--out", "out_root", type=click.Path(path_type=Path), help="Evidence/report directory.")
@click.option("-k", "scenario_filter", help="Only scenarios whose name matches (pytest -k).")
@click.option("--quiet", is_flag=True, help="No live progress, only the summary.")
def run(
    drills: tuple[str, ...],
    environment: str,
    config_path: Path | None,
    out_root: Path | None,
    scenario_filter: str | None,
    quiet: bool,
) -> None:
    """Run DRILLS (failover, pitr, cache-failover, or all) and write evidence and reports."""
    from harness.config import get_profile
    from harness.run_context import DEFAULT_OUT
    from harness.runner import resolve, run_drills

    names = resolve(list(drills) or ["all"])
    get_profile(environment, config_path)  # a bad profile fails here, before anything starts
    summary = run_drills(
        names,
        environment,
        "cli",
        out_root=(out_root or DEFAULT_OUT).resolve(),
        config_path=config_path,
        scenario_filter=scenario_filter,
        live_log=not quiet,
    )
    print_summary(summary.records, summary.evidence_paths)
    for error in summary.errors:
        click.echo(f"firedrill: error: {error}", err=True)
    passed = sum(r.verdict == "passed" for r in summary.records)
    click.echo(f"\n{passed}/{len(summary.records)} scenarios passed")
    sys.exit(summary.exit_code)


@cli.command()
@click.argument("evidence", type=click.Path(path_type=Path))
def report(evidence: Path) -> None:
    """Render report.html and report.md again from an evidence.json alone."""
    from harness.report import render_from_evidence

    paths = render_from_evidence(evidence)
    click.echo(f"{paths.html}\n{paths.md}")


@cli.command()
def doctor() -> None:
    """Check that this machine can run the local staging."""
    from harness.staging.pg_binaries import find_binaries, service_user

    pg = find_binaries()
    click.echo(f"PostgreSQL {pg.version} at {pg.bindir} (run as {service_user() or 'current user'})")
    import shutil

    redis = shutil.which("redis-server")
    click.echo(f"redis-server: {redis or 'NOT FOUND'}")
    chromium = shutil.which("chromium")
    click.echo(f"chromium (report screenshots): {chromium or 'not found'}")


def _register_optional() -> None:
    """Commands from modules that may not exist in every build."""
    import importlib

    for module in ("harness.cli_staging", "harness.cli_ledger", "harness.cli_aws", "harness.cli_calibrate"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        for command in getattr(mod, "COMMANDS", []):
            cli.add_command(command)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: staging stopped, evidence written


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    _register_optional()
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
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except KeyboardInterrupt:
        _fail("interrupted")
    sys.exit(0)


if __name__ == "__main__":
    main()
