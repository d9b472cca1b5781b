"""`firedrill verify`, `evidence-report` and `ledger ...`: the audit side of the CLI.

Registered by `firedrill.cli.main` through `COMMANDS` (`firedrill schedule` is `firedrill.cli.schedule`).
Errors are HarnessError subclasses (one line, exit 2, printed by `firedrill.cli.main.main`); a ledger that
does not verify is a result, not an error: one line on stderr naming the first broken record, exit 1.

Configuration (all optional) comes from the same file as the profiles (`--config`, else
./firedrill.toml): `[ledger]`, `[schedule]`, `[notify]`, `[metrics]`, `[archive]`; see
`firedrill.config`. Example::

    [ledger]
    dir = "reports/ledger"                  # default
    signing_key_file = "/etc/firedrill/ledger.key"   # or $FIREDRILL_SIGNING_KEY
    public_key_file = "ledger.pub"

The evidence report checks the ledger against the `[schedule]` (see `firedrill.cli.schedule`).
"""

from __future__ import annotations

import logging
import sys
from datetime import date
from pathlib import Path

import boto3
import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firedrill.audit import ledger
from firedrill.audit.archive_s3 import archive_ledger
from firedrill.audit.signing import fingerprint, generate_key, load_public_key_file
from firedrill.cli.schedule import config_option, describe_cadence, describe_schedule, schedule_config
from firedrill.config import Settings, load_settings
from firedrill.errors import ConfigError, HarnessError
from firedrill.publish.hook import chain_evidence, ledger_dir_for, load_signer
from firedrill.report.period import build_period_report, load_findings, write_period_report
from firedrill.run_context import default_out
from firedrill.schedule.config import fire_times_between

# ---------------------------------------------------------------------------------------------- verify


def _public_key(settings: Settings, explicit: Path | None) -> tuple[Ed25519PublicKey | None, str | None]:
    """(Ed25519 public key or None, where it came from): --public-key, [ledger] public_key_file, or the
    public half of the configured signing key."""
    if explicit is not None:
        return load_public_key_file(explicit), f"--public-key {explicit}"
    if settings.ledger.public_key_file is not None:
        path = settings.ledger.public_key_file
        return load_public_key_file(path), f"{path} ([ledger] public_key_file)"
    signer = load_signer(settings.ledger)
    if signer is not None:
        return signer.public_key(), f"the signing key ({signer.source})"
    return None, None


public_key_option = click.option(
    "--public-key",
    "public_key_path",
    type=click.Path(path_type=Path),
    help="Ed25519 public key (PEM or base64) to check signatures "
    "(default: [ledger] public_key_file, or the configured signing key's).",
)


@click.command("verify")
@click.argument("ledger_dir", type=click.Path(path_type=Path))
@public_key_option
@config_option
def verify_cmd(ledger_dir: Path, public_key_path: Path | None, config_path: Path | None) -> None:
    """Check every record of LEDGER_DIR: chain, HEAD, signatures. Exit 1 at the first broken link."""
    if not ledger_dir.is_dir():
        raise ConfigError(f"ledger directory not found: {ledger_dir}")
    key, source = _public_key(load_settings(config_path), public_key_path)
    result = ledger.verify(ledger_dir, key)
    if not result.ok:
        click.echo(f"firedrill: {result.summary()}", err=True)
        sys.exit(1)
    click.echo(result.summary())
    if result.head_seq is not None:
        click.echo(f"  HEAD: record {result.head_seq}, sha256 {result.head_sha256}")
    if key is not None:
        click.echo(f"  key:  {fingerprint(key)} (from {source})")
    else:
        head = ledger.read_head(ledger_dir)
        if head is not None and head.key_fingerprint:
            click.echo(f"  HEAD names signing key {head.key_fingerprint}: pass --public-key to check it")


# ---------------------------------------------------------------------------------------------- report


def _parse_date(option: str, value: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise ConfigError(f"{option} {value!r} is not a date like 2026-01-31 ({exc})") from exc


@click.command("evidence-report")
@click.option("--from", "date_from", required=True, help="First day of the period (YYYY-MM-DD, UTC).")
@click.option("--to", "date_to", required=True, help="Last day of the period, included (YYYY-MM-DD, UTC).")
@click.option(
    "--ledger", "ledger_dir", type=click.Path(path_type=Path), help="Ledger (default: reports/ledger)."
)
@click.option(
    "--findings", "findings_path", type=click.Path(path_type=Path), help="Findings file (.toml or .json)."
)
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), help="Output directory (default: reports/out)."
)
@public_key_option
@config_option
def evidence_report_cmd(
    date_from: str,
    date_to: str,
    ledger_dir: Path | None,
    findings_path: Path | None,
    out_dir: Path | None,
    public_key_path: Path | None,
    config_path: Path | None,
) -> None:
    """The compliance evidence report (HTML + Markdown) for a period, from the ledger."""
    start = _parse_date("--from", date_from)
    end = _parse_date("--to", date_to)
    if end < start:
        raise ConfigError(f"--from {start} is after --to {end}")
    settings = load_settings(config_path)
    ledger_dir = ledger_dir or ledger_dir_for(settings.ledger, None)
    if not ledger_dir.is_dir():
        raise ConfigError(f"ledger directory not found: {ledger_dir}")
    findings = load_findings(findings_path) if findings_path is not None else None
    key, source = _public_key(settings, public_key_path)
    result = ledger.verify(ledger_dir, key)

    key_fp: str | None = None
    pem: str | None = None
    if key is not None:
        key_fp = fingerprint(key)
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")
    else:
        try:
            head = ledger.read_head(ledger_dir)
        except HarnessError:  # a broken HEAD is in the verification result already
            head = None
        key_fp = head.key_fingerprint if head is not None else None

    config = schedule_config(settings)
    report = build_period_report(
        ledger_dir,
        start,
        end,
        result,
        findings=findings,
        scheduled_times=fire_times_between(config, start, end),
        expected_drills=list(config.drills) if settings.schedule else [],
        schedule_description=describe_schedule(config)
        if settings.schedule
        else f"{describe_cadence(config)} (the default; no [schedule] configured)",
        key_fingerprint=key_fp,
        key_source=source,
        public_key_pem=pem,
    )
    paths = write_period_report(report, out_dir or default_out())
    click.echo(f"{paths.html}\n{paths.md}")
    missed = ", ".join(q.label for q in report.missed_quarters) or "none"
    click.echo(
        f"{len(report.rows)} runs in {start} .. {end}; quarters run: "
        f"{sum(q.status == 'ran' for q in report.quarters)} of {len(report.quarters)} (not run: {missed})"
    )
    if not result.ok:
        click.echo(f"firedrill: {result.summary()}", err=True)
        sys.exit(1)
    click.echo(result.summary())


# ---------------------------------------------------------------------------------------------- ledger


@click.group("ledger")
def ledger_group() -> None:
    """Evidence ledger maintenance: append, keygen, public-key, archive."""


@ledger_group.command("append")
@click.argument("evidence", type=click.Path(path_type=Path))
@config_option
def ledger_append_cmd(evidence: Path, config_path: Path | None) -> None:
    """Chain an evidence.json the after-run hook could not append (rewrites it with its link)."""
    outcome = chain_evidence(evidence, load_settings(config_path))
    signed = f"signed, key {outcome.signed_by}" if outcome.signed_by else "unsigned"
    click.echo(f"{outcome.record.run_id}: record {outcome.seq} of {outcome.ledger_dir} ({signed})")


@ledger_group.command("keygen")
@click.argument("path", type=click.Path(path_type=Path))
def ledger_keygen_cmd(path: Path) -> None:
    """Create an Ed25519 signing key at PATH (mode 0600, never overwritten); print its public key."""
    signer = generate_key(path)
    click.echo(f"private key written to {path} (mode 0600); fingerprint {signer.fingerprint()}")
    click.echo("configure it with [ledger] signing_key_file, or put its content in $FIREDRILL_SIGNING_KEY;")
    click.echo("give this public key to whoever verifies the ledger:")
    click.echo(signer.public_key_pem().rstrip("\n"))


@ledger_group.command("public-key")
@config_option
def ledger_public_key_cmd(config_path: Path | None) -> None:
    """Print the public key (PEM) of the configured signing key, for verifiers and auditors."""
    signer = load_signer(load_settings(config_path).ledger)
    if signer is None:
        raise ConfigError("no signing key configured ($FIREDRILL_SIGNING_KEY or [ledger] signing_key_file)")
    click.echo(signer.public_key_pem().rstrip("\n"))


@ledger_group.command("archive")
@click.option(
    "--ledger", "ledger_dir", type=click.Path(path_type=Path), help="Ledger (default: reports/ledger)."
)
@click.option("--bucket", help="S3 bucket with Object Lock enabled (default: [archive] bucket).")
@click.option("--prefix", help="Key prefix (default: [archive] prefix).")
@click.option("--retention-days", type=int, help="Compliance-mode retention (default: [archive], 365).")
@click.option("--region", help="AWS region (default: [archive] region, else the AWS default chain).")
@click.option("--endpoint-url", help="S3-compatible endpoint (tests, MinIO); default: AWS.")
@public_key_option
@config_option
def ledger_archive_cmd(
    ledger_dir: Path | None,
    bucket: str | None,
    prefix: str | None,
    retention_days: int | None,
    region: str | None,
    endpoint_url: str | None,
    public_key_path: Path | None,
    config_path: Path | None,
) -> None:
    """Copy the ledger to S3 with Object Lock (compliance mode); refuses a ledger that does not verify."""
    settings = load_settings(config_path)
    conf = settings.archive
    bucket = bucket or (conf.bucket if conf else None)
    if not bucket:
        raise ConfigError("no bucket: pass --bucket or configure [archive] bucket")
    prefix = prefix if prefix is not None else (conf.prefix if conf else "firedrill-ledger")
    days = retention_days if retention_days is not None else (conf.retention_days if conf else 365)
    region = region or (conf.region if conf else None)
    ledger_dir = ledger_dir or ledger_dir_for(settings.ledger, None)
    if not ledger_dir.is_dir():
        raise ConfigError(f"ledger directory not found: {ledger_dir}")
    key, _source = _public_key(settings, public_key_path)
    logging.getLogger("botocore").setLevel(logging.WARNING)  # no "Found credentials in ..." chatter
    client = boto3.client("s3", region_name=region, endpoint_url=endpoint_url)
    result = archive_ledger(ledger_dir, bucket, prefix, days, client, public_key=key)
    click.echo(result.summary())


COMMANDS = [verify_cmd, evidence_report_cmd, ledger_group]
