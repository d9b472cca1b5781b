"""`firedrill schedule`: the drills on their schedule (default: quarterly), or `--list` / `--run-now`.

Registered by `firedrill.cli.main` through `COMMANDS`. Errors are HarnessError subclasses (one line,
exit 2, printed by `firedrill.cli.main.main`).

The `[schedule]` section of the config file (`--config`, else ./firedrill.toml) is validated by
`firedrill.schedule.config.ScheduleConfig`; without one, every scheduled drill of the catalogue runs on
`local`. A relative job store path is taken from the config file's directory, else the working
directory (never the install location). Example::

    [schedule]
    drills = ["failover"]
    environment = "local"
    job_store = "reports/schedule.sqlite"   # or job_store_env = "FIREDRILL_SCHEDULE_DB" (postgresql://...)
    misfire_grace_hours = 6
    [schedule.cron]                         # default: 09:00 UTC, first Monday of Jan/Apr/Jul/Oct
    day = "1st mon"

`schedule_config`, `describe_schedule` and `describe_cadence` are shared with `evidence-report`
(`firedrill.cli.audit`), which checks the ledger against the same schedule.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import click

from firedrill.cli.run import print_summary
from firedrill.config import Settings, get_profile, load_settings
from firedrill.errors import ConfigError
from firedrill.run_context import default_job_store
from firedrill.runner import available_drills, resolve, run_drills
from firedrill.schedule import service
from firedrill.schedule.config import CRON_FIELDS, ScheduleConfig, next_run_times, quarter_of

SCHEDULED_RUNNER = "firedrill.cli.schedule:scheduled_run"

_config_path: Path | None = None  # `schedule --config`, for the drill runs the scheduler starts
_runner_calls = 0

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="Config file with [ledger]/[schedule]/... (default: ./firedrill.toml if present).",
)


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
        f"{name}={getattr(cron, name)!r}" for name in CRON_FIELDS if getattr(cron, name) is not None
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
    """One line for the period report and --list: the drills by name, the environment, the cadence."""
    return f"{', '.join(config.drills)} on {config.environment}: {describe_cadence(config)}"


def scheduled_run(drills: list[str], environment: str, via: str) -> int:
    """The runner the scheduler calls: the same child pytest-bdd session as `firedrill run`."""
    global _runner_calls
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
    if list_only and run_now:
        raise ConfigError("--list and --run-now cannot be combined")
    settings = load_settings(config_path)
    config = schedule_config(settings, drills, environment)
    resolve(list(config.drills))  # unknown drill: one line, before anything starts
    get_profile(config.environment, config_path)
    _config_path = config_path.resolve() if config_path is not None else None

    if list_only:
        times = next_run_times(config, n=count)
        click.echo(f"schedule {config.effective_job_id}: {describe_schedule(config)}")
        click.echo(
            f"  misfire grace {config.misfire_grace_hours:g} h, coalesce, one run at a time; "
            f"job store {_describe_store(config.job_store)}"
        )
        click.echo(f"next {len(times)} run{'s' if len(times) != 1 else ''}:")
        for t in times:
            utc = t.astimezone(UTC)
            local = "" if t.utcoffset() == utc.utcoffset() else f"  ({t:%Y-%m-%d %H:%M %Z})"
            click.echo(f"  {utc:%Y-%m-%d %H:%M} UTC  {utc:%a}  {quarter_of(utc)}{local}")
        return

    if run_now:
        before = _runner_calls
        quarter = quarter_of(datetime.now(UTC))
        code = service.run_now(config)
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
    upcoming = next_run_times(config, n=1)
    click.echo(
        f"firedrill scheduler: {describe_schedule(config)}; next run "
        + (f"{upcoming[0].astimezone(UTC):%Y-%m-%d %H:%M} UTC" if upcoming else "never")
        + f"; job store {_describe_store(config.job_store)}. Stop with Ctrl-C or SIGTERM."
    )
    service.serve(config, stop)
    click.echo("firedrill scheduler stopped")


COMMANDS = [schedule_cmd]
