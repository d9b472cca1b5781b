"""`firedrill schedule`, `verify`, `evidence-report` and `ledger ...`: the audit side of the CLI.

Registered by `firedrill.cli.main` through `COMMANDS`. Errors are HarnessError subclasses
(one line, exit 2, printed by `firedrill.cli.main.main`); a ledger that does not verify is a result, not an
error: one line on stderr naming the first broken record, exit 1.

Configuration (all optional) comes from the same file as the profiles (`--config`, else
./firedrill.toml): `[ledger]`, `[schedule]`, `[notify]`, `[metrics]`, `[archive]`; see
`firedrill.config`. Example::

    [ledger]
    dir = "reports/ledger"                  # default
    signing_key_file = "/etc/firedrill/ledger.key"   # or $FIREDRILL_SIGNING_KEY
    public_key_file = "ledger.pub"

    [schedule]
    drills = ["failover"]
    environment = "local"
    job_store = "reports/schedule.sqlite"   # or job_store_env = "FIREDRILL_SCHEDULE_DB" (postgresql://...)
    misfire_grace_hours = 6
    [schedule.cron]                         # default: 09:00 UTC, first Monday of Jan/Apr/Jul/Oct
    day = "1st mon"
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import urllib.parse
from datetime import UTC, date, datetime, time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from firedrill.config import Settings, get_profile, load_settings
from firedrill.errors import ConfigError, HarnessError
from firedrill.run_context import default_job_store, default_out

if TYPE_CHECKING:  # imported lazily at run time: every `firedrill` call imports this module
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from firedrill.schedule.service import ScheduleConfig

SCHEDULED_RUNNER = "firedrill.cli.audit:scheduled_run"

_config_path: Path | None = None  # `schedule --config`, for the drill runs the scheduler starts
_runner_calls = 0

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="Config file with [ledger]/[schedule]/... (default: ./firedrill.toml if present).",
)


def _settings(config_path: Path | None) -> Settings:
    return load_settings(config_path)


# ---------------------------------------------------------------------------------------------- schedule


def _resolve_store(value: str, base: Path | None) -> str:
    """A relative SQLite path is taken from the config file's directory (else the working directory)."""
    root = base or Path.cwd()
    if value.lower().startswith("sqlite:///"):
        path = Path(value[len("sqlite:///") :])
        return "sqlite:///" + str(path if path.is_absolute() else root / path)
    if "://" in value:
        return value
    path = Path(value)
    return str(path if path.is_absolute() else root / path)


def schedule_config(
    settings: Settings, drills: tuple[str, ...] = (), environment: str | None = None
) -> ScheduleConfig:
    """The `ScheduleConfig` from `[schedule]`, with CLI overrides. Defaults: every drill, on `local`."""
    from firedrill.runner import available_drills
    from firedrill.schedule.service import ScheduleConfig

    data: dict[str, object] = dict(settings.schedule or {})
    env_var = data.pop("job_store_env", None)
    if env_var is not None:
        url = os.environ.get(str(env_var), "")
        if not url:
            raise ConfigError(f"schedule.job_store_env: environment variable {env_var} is not set")
        data["job_store"] = url
    if drills:
        data["drills"] = list(drills)
    data.setdefault("drills", available_drills())
    if environment:
        data["environment"] = environment
    data.setdefault("environment", "local")
    base = settings.source.parent if settings.source is not None else None
    store = data.get("job_store")
    data["job_store"] = _resolve_store(str(store), base) if store is not None else str(default_job_store())
    data.setdefault("runner", SCHEDULED_RUNNER)
    return ScheduleConfig.from_mapping(data)


def _describe_store(job_store: str) -> str:
    """The job store without credentials."""
    if "://" not in job_store or job_store.lower().startswith("sqlite:///"):
        return f"SQLite {job_store.removeprefix('sqlite:///')}"
    parts = urllib.parse.urlsplit(job_store)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"PostgreSQL {parts.scheme}://{host}{port}{parts.path}"


def _describe_cron(config: ScheduleConfig) -> str:
    cron = config.cron
    fields = ", ".join(
        f"{name}={getattr(cron, name)!r}"
        for name in ("year", "month", "week", "day", "day_of_week", "hour", "minute", "second")
        if getattr(cron, name) is not None
    )
    return f"cron({fields}) {cron.timezone}"


def describe_cadence(config: ScheduleConfig) -> str:
    """When the schedule fires, in words for the default."""
    cron = config.cron
    default = ("1,4,7,10", "1st mon", "9", "0", None, None, None, None)
    fields = (
        cron.month,
        cron.day,
        cron.hour,
        cron.minute,
        cron.day_of_week,
        cron.week,
        cron.year,
        cron.second,
    )
    if fields == default:
        return f"quarterly, first Monday of Jan/Apr/Jul/Oct at 09:00 {cron.timezone}"
    return _describe_cron(config)


def describe_schedule(config: ScheduleConfig) -> str:
    """One line for the period report and --list."""
    return f"{', '.join(config.drills)} on {config.environment}: {describe_cadence(config)}"


def scheduled_run(drills: list[str], environment: str, via: str) -> int:
    """The runner the scheduler calls: the same child pytest-bdd session as `firedrill run`."""
    global _runner_calls
    from firedrill.cli.run import print_summary
    from firedrill.runner import run_drills

    _runner_calls += 1
    summary = run_drills(drills, environment, via, config_path=_config_path, live_log=False)
    print_summary(summary.records, summary.evidence_paths)
    for error in summary.errors:
        click.echo(f"firedrill: error: {error}", err=True)
    passed = sum(r.verdict == "passed" for r in summary.records)
    click.echo(f"\n{passed}/{len(summary.records)} scenarios passed")
    return summary.exit_code


@click.command("schedule")
@click.argument("drills", nargs=-1)
@click.option("--env", "environment", help="Environment profile (default: [schedule] environment, or local).")
@config_option
@click.option("--list", "list_only", is_flag=True, help="Show the next run times and exit.")
@click.option("--count", default=4, show_default=True, type=click.IntRange(1, 100), help="How many (--list).")
@click.option("--run-now", is_flag=True, help="Run the drill set once now, through the scheduled path.")
def schedule_cmd(
    drills: tuple[str, ...],
    environment: str | None,
    config_path: Path | None,
    list_only: bool,
    count: int,
    run_now: bool,
) -> None:
    """Run the drills on their schedule (default: quarterly), or --list / --run-now.

    Without options, runs a long-lived scheduler (APScheduler, persistent job store, one leader per
    job store) until SIGTERM or Ctrl-C. Each drill runs at most once per quarter and environment.
    """
    global _config_path
    from firedrill.runner import resolve
    from firedrill.schedule import service as schedule

    if list_only and run_now:
        raise ConfigError("--list and --run-now cannot be combined")
    settings = _settings(config_path)
    config = schedule_config(settings, drills, environment)
    resolve(list(config.drills))  # unknown drill: one line, before anything starts
    get_profile(config.environment, config_path)
    _config_path = config_path.resolve() if config_path is not None else None

    if list_only:
        times = schedule.next_run_times(config, n=count)
        click.echo(f"schedule {config.effective_job_id}: {describe_schedule(config)}")
        click.echo(
            f"  misfire grace {config.misfire_grace_hours:g} h, coalesce, one run at a time; "
            f"job store {_describe_store(config.job_store)}"
        )
        click.echo(f"next {len(times)} run{'s' if len(times) != 1 else ''}:")
        for t in times:
            utc = t.astimezone(UTC)
            local = "" if t.utcoffset() == utc.utcoffset() else f"  ({t:%Y-%m-%d %H:%M %Z})"
            click.echo(f"  {utc:%Y-%m-%d %H:%M} UTC  {utc:%a}  {schedule.quarter_of(utc)}{local}")
        return

    if run_now:
        before = _runner_calls
        quarter = schedule.quarter_of(datetime.now(UTC))
        code = schedule.run_now(config)
        if config.runner == SCHEDULED_RUNNER and _runner_calls == before:
            click.echo(
                f"nothing to run: {', '.join(config.drills)} already ran on {config.environment} "
                f"in {quarter} (run guard in {_describe_store(config.job_store)}); "
                "`firedrill run` runs it again by hand"
            )
        sys.exit(code)

    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    upcoming = schedule.next_run_times(config, n=1)
    click.echo(
        f"firedrill scheduler: {describe_schedule(config)}; next run "
        + (f"{upcoming[0].astimezone(UTC):%Y-%m-%d %H:%M} UTC" if upcoming else "never")
        + f"; job store {_describe_store(config.job_store)}. Stop with Ctrl-C or SIGTERM."
    )
    schedule.serve(config, stop)
    click.echo("firedrill scheduler stopped")


# ---------------------------------------------------------------------------------------------- verify


def _public_key(settings: Settings, explicit: Path | None) -> tuple[Ed25519PublicKey | None, str | None]:
    """(Ed25519 public key or None, where it came from): --public-key, [ledger] public_key_file, or the
    public half of the configured signing key."""
    from firedrill.audit.signing import load_public_key_file
    from firedrill.publish.hook import load_signer

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
    from firedrill.audit import ledger
    from firedrill.audit.signing import fingerprint

    if not ledger_dir.is_dir():
        raise ConfigError(f"ledger directory not found: {ledger_dir}")
    key, source = _public_key(_settings(config_path), public_key_path)
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


def fire_times_between(config: ScheduleConfig, start: date, end: date) -> list[datetime]:
    """The schedule's fire times from `start` 00:00 UTC to `end` 24:00 UTC."""
    from firedrill.schedule.service import build_trigger

    trigger = build_trigger(config.cron)
    lo = datetime.combine(start, time(0), UTC)
    hi = datetime.combine(end, time(23, 59, 59, 999999), UTC)
    times: list[datetime] = []
    previous: datetime | None = None
    current = lo
    while len(times) < 10_000:
        fire = trigger.get_next_fire_time(previous, current)
        if fire is None or fire > hi:
            break
        times.append(fire)
        previous = fire
        current = fire
    return times


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
    from firedrill.audit import ledger
    from firedrill.audit.signing import fingerprint
    from firedrill.publish.hook import ledger_dir_for
    from firedrill.report.period_report import build_period_report, load_findings, write_period_report

    start = _parse_date("--from", date_from)
    end = _parse_date("--to", date_to)
    if end < start:
        raise ConfigError(f"--from {start} is after --to {end}")
    settings = _settings(config_path)
    ledger_dir = ledger_dir or ledger_dir_for(settings.ledger, None)
    if not ledger_dir.is_dir():
        raise ConfigError(f"ledger directory not found: {ledger_dir}")
    findings = load_findings(findings_path) if findings_path is not None else None
    key, source = _public_key(settings, public_key_path)
    result = ledger.verify(ledger_dir, key)

    key_fp: str | None = None
    pem: str | None = None
    if key is not None:
        from cryptography.hazmat.primitives import serialization

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
    from firedrill.publish.hook import chain_evidence

    outcome = chain_evidence(evidence, _settings(config_path))
    signed = f"signed, key {outcome.signed_by}" if outcome.signed_by else "unsigned"
    click.echo(f"{outcome.record.run_id}: record {outcome.seq} of {outcome.ledger_dir} ({signed})")


@ledger_group.command("keygen")
@click.argument("path", type=click.Path(path_type=Path))
def ledger_keygen_cmd(path: Path) -> None:
    """Create an Ed25519 signing key at PATH (mode 0600, never overwritten); print its public key."""
    from firedrill.audit.signing import generate_key

    signer = generate_key(path)
    click.echo(f"private key written to {path} (mode 0600); fingerprint {signer.fingerprint()}")
    click.echo("configure it with [ledger] signing_key_file, or put its content in $FIREDRILL_SIGNING_KEY;")
    click.echo("give this public key to whoever verifies the ledger:")
    click.echo(signer.public_key_pem().rstrip("\n"))


@ledger_group.command("public-key")
@config_option
def ledger_public_key_cmd(config_path: Path | None) -> None:
    """Print the public key (PEM) of the configured signing key, for verifiers and auditors."""
    from firedrill.publish.hook import load_signer

    signer = load_signer(_settings(config_path).ledger)
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
    import boto3

    from firedrill.audit.archive_s3 import archive_ledger
    from firedrill.publish.hook import ledger_dir_for

    settings = _settings(config_path)
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


COMMANDS = [schedule_cmd, verify_cmd, evidence_report_cmd, ledger_group]
