"""`firedrill plan` and `firedrill aws cleanup`, added to the CLI by `firedrill.cli.main`.

Errors (a refused guardrail, a bad profile, an AWS error) reach `firedrill.cli.main.main` as HarnessError and
end as one line on stderr with exit status 2.
"""

from __future__ import annotations

from pathlib import Path

import click

from firedrill.aws.cleanup import sweep
from firedrill.aws.session import AwsSession, aws_settings
from firedrill.config import get_profile
from firedrill.drills.plan import make_plan

IAM_POLICY = Path(__file__).resolve().parents[1] / "iam" / "firedrill-drill-policy.json"


@click.command("plan")
@click.argument("drill")
@click.option("--env", "environment", required=True, help="Environment profile.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Profiles file.")
def plan(drill: str, environment: str, config_path: Path | None) -> None:
    """Print every change DRILL would make in an environment, and make none (dry run).
    `firedrill run --help` lists the drills."""

    click.echo(make_plan(drill, get_profile(environment, config_path)).render())


@click.group("aws")
def aws() -> None:
    """AWS housekeeping."""


@aws.command("iam-policy")
def iam_policy() -> None:
    """Print the least-privilege IAM policy the drills need (JSON), e.g. to attach to a drill role."""
    click.echo(IAM_POLICY.read_text(encoding="utf-8"), nl=False)


@aws.command("cleanup")
@click.option("--env", "environment", required=True, help="Environment profile (an AWS one).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Profiles file.")
@click.option("--all", "include_unexpired", is_flag=True, help="Also delete temporaries not yet expired.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def cleanup(environment: str, config_path: Path | None, include_unexpired: bool, dry_run: bool) -> None:
    """Delete leftover temporary resources firedrill created (tagged firedrill:managed), and only those."""

    session = AwsSession(aws_settings(get_profile(environment, config_path)))
    result = sweep(session, include_unexpired=include_unexpired, dry_run=dry_run)
    click.echo(f"account {result.account}, region {session.settings.region}")
    for line in result.deleted:
        click.echo(f"  deleted  {line}")
    for line in result.kept:
        click.echo(f"  kept     {line}")
    click.echo(result.summary())


COMMANDS: list[click.Command] = [plan, aws]
