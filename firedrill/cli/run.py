"""`firedrill run` and `firedrill report`: drills by name or by feature file, and their summary."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from firedrill.catalogue import catalogue
from firedrill.config import get_profile
from firedrill.evidence import EvidenceRecord
from firedrill.report.run_report import render_from_evidence
from firedrill.runner import run_drills, select


def fmt_s(value: float | None) -> str:
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
                else (fmt_s(v.measured) if v.unit == "s" else f"{v.measured:g} {v.unit}")
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
        if record.load is not None:
            L = record.load
            lost = "not verified" if L.lost_writes is None else f"{L.lost_writes} lost"
            more = " ..." if len(L.lost_seqs) > 10 else ""
            seqs = f" (seq {', '.join(map(str, L.lost_seqs[:10]))}{more})" if L.lost_seqs else ""
            rate = f"{L.achieved_per_s:,.0f} of {L.requested_per_s:,.0f} ops/s"
            click.echo(
                f"  load         {L.writers} writers, {rate}; "
                f"{lost} of {L.acknowledged_writes:,} acknowledged writes{seqs}"
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


def _run_help() -> str:
    lines = [
        "Run drills and write evidence and reports.",
        "",
        "TARGETS are drill names, `all`, or .feature files and directories. With none, the .feature",
        "files under the current directory are run (a drills repository), else every drill.",
        "",
        "\b",
        "Drills:",
    ]
    for spec in catalogue().values():
        extra = "" if spec.in_all else " (not in `all`)"
        lines.append(f"  {spec.name:<16} {spec.summary}{extra}")
    return "\n".join(lines)


@click.command(help=_run_help())
@click.argument("targets", nargs=-1)
@click.option("--env", "environment", default="local", show_default=True, help="Environment profile.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="Profiles file (default: ./firedrill.toml if present).",
)
@click.option(
    "--out",
    "out_root",
    type=click.Path(path_type=Path),
    help="Evidence/report directory (default: ./reports/out).",
)
@click.option("-k", "scenario_filter", help="Only scenarios whose name matches (pytest -k).")
@click.option("--quiet", is_flag=True, help="No live progress, only the summary.")
def run(
    targets: tuple[str, ...],
    environment: str,
    config_path: Path | None,
    out_root: Path | None,
    scenario_filter: str | None,
    quiet: bool,
) -> None:
    select(list(targets))  # an unknown drill or a missing file fails here, before anything starts
    get_profile(environment, config_path)  # and so does a bad profile
    summary = run_drills(
        list(targets),
        environment,
        "cli",
        out_root=out_root.resolve() if out_root else None,
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


@click.command()
@click.argument("evidence", type=click.Path(path_type=Path))
def report(evidence: Path) -> None:
    """Render report.html and report.md again from an evidence.json alone."""
    paths = render_from_evidence(evidence)
    click.echo(f"{paths.html}\n{paths.md}")


COMMANDS: list[click.Command] = [run, report]
