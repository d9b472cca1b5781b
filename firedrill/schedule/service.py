"""Quarterly drills with APScheduler 3.x: the scheduler, its one job, and the job function.

The pieces: `firedrill.schedule.config` (the `[schedule]` model and the cron trigger),
`firedrill.schedule.jobstore` (the persistent job store: SQLite file by default, PostgreSQL by URL) and
`firedrill.schedule.leader` (one leader per job store; the once-per-quarter run guard). This module puts
them together:

- **The job** is added by textual reference (`JOB_FUNC`, this module's `run_scheduled`), so the
  persistent store holds a name, not a pickled function; its runner is a textual reference too
  (`config.runner`, default `firedrill.runner:run_drills`).
- **Missed runs survive restarts.** `add_job(..., replace_existing=True)` recomputes the next run time
  from "now" and overwrites the stored one, so a scheduler restarted at 10:00 would silently skip the
  09:00 run whatever `misfire_grace_time` says. `build_scheduler` carries an earlier stored run time
  over, and the grace period (6 h by default) then decides: run late, or log a missed run.
- **Two schedulers.** `serve` runs the scheduler only while it holds the leader lock, and every run
  claims a (drill, environment, quarter) row first (`claim_run`), so even two leaders never run a drill
  twice in a quarter.
"""

from __future__ import annotations

import importlib
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from firedrill.errors import ConfigError, TargetError
from firedrill.schedule.config import DEFAULT_RUNNER, DEFAULT_STORE, ScheduleConfig, build_trigger, quarter_of
from firedrill.schedule.jobstore import SQLJobStore, make_job_store
from firedrill.schedule.leader import claim_run, leader_lock

log = logging.getLogger("firedrill.schedule")

JOB_FUNC = "firedrill.schedule.service:run_scheduled"

RunFunction = Callable[[list[str], str, str], int]  # (drills, environment, via) -> exit code


def build_scheduler(config: ScheduleConfig) -> BackgroundScheduler | BlockingScheduler:
    """A scheduler (not started) with the persistent job store and the drill job added.

    Job: textual reference `firedrill.schedule.service:run_scheduled`, explicit id, replace_existing=True,
    misfire_grace_time from the config (6 h by default), coalesce=True, max_instances=1.
    """
    trigger = build_trigger(config.cron)
    store = make_job_store(config)
    job_defaults = {"misfire_grace_time": config.misfire_grace_s, "coalesce": True, "max_instances": 1}
    cls = BlockingScheduler if config.blocking else BackgroundScheduler
    scheduler = cls(jobstores={"default": store}, job_defaults=job_defaults, timezone=trigger.timezone)
    extra: dict[str, Any] = {}
    carried = _missed_run_time(store, config.effective_job_id, trigger)
    if carried is not None:
        log.warning("schedule: run due at %s was missed while no scheduler ran; keeping it", carried)
        extra["next_run_time"] = carried
    scheduler.add_job(
        JOB_FUNC,
        trigger=trigger,
        id=config.effective_job_id,
        name=f"firedrill {','.join(config.drills)} on {config.environment}",
        kwargs=job_kwargs(config),
        replace_existing=True,
        misfire_grace_time=config.misfire_grace_s,
        coalesce=True,
        max_instances=1,
        **extra,
    )
    return scheduler


def job_kwargs(config: ScheduleConfig) -> dict[str, Any]:
    return {
        "drills": list(config.drills),
        "environment": config.environment,
        "runner": config.runner,
        "job_store": config.job_store,
        "pg_schema": config.pg_schema,
    }


def run_scheduled(
    drills: list[str],
    environment: str,
    *,
    runner: str | RunFunction = DEFAULT_RUNNER,
    job_store: str = DEFAULT_STORE,
    pg_schema: str = "public",
    via: str = "schedule",
    now: datetime | None = None,
) -> int:
    """The scheduled job: claim each drill for this quarter, run the claimed ones, return the exit code.

    Drills already claimed this quarter (by this or another scheduler) are skipped; if none is left, the
    runner is not called and 0 is returned. The runner's exceptions propagate (APScheduler logs them).
    """
    quarter = quarter_of(now or datetime.now(UTC))
    token = f"sched-{uuid.uuid4().hex[:12]}"
    claimed = [
        d for d in drills if claim_run(job_store, d, environment, quarter, run_id=token, schema=pg_schema)
    ]
    skipped = [d for d in drills if d not in claimed]
    if skipped:
        log.info("schedule: %s already ran on %s in %s; skipped", ", ".join(skipped), environment, quarter)
    if not claimed:
        return 0
    run = resolve_runner(runner)
    log.info("schedule: running %s on %s (%s, %s)", ", ".join(claimed), environment, quarter, token)
    return int(run(claimed, environment, via))


def run_now(config: ScheduleConfig, *, via: str = "schedule", now: datetime | None = None) -> int:
    """`schedule --run-now`: the scheduled job's path, run synchronously, same once-per-quarter guard."""
    build_trigger(config.cron)
    return run_scheduled(
        list(config.drills),
        config.environment,
        runner=config.runner,
        job_store=config.job_store,
        pg_schema=config.pg_schema,
        via=via,
        now=now,
    )


def resolve_runner(ref: str | RunFunction) -> RunFunction:
    if callable(ref):
        return ref
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"schedule runner {ref!r} is not a 'module:function' reference")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"schedule runner {ref!r}: cannot import {module_name}: {exc}") from exc
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ConfigError(f"schedule runner {ref!r}: {module_name} has no {attr}") from exc
    if not callable(obj):
        raise ConfigError(f"schedule runner {ref!r} is not callable")
    return cast(RunFunction, obj)


def serve(config: ScheduleConfig, stop: threading.Event | None = None) -> None:
    """Run the scheduler while this process is the leader; stand by otherwise. Returns when `stop` is set.

    Leadership: PostgreSQL `pg_try_advisory_lock` on a dedicated connection (lost with that session),
    SQLite an fcntl lock on `<file>.leader`. On losing it, the scheduler is shut down and this process
    stands by again.
    """
    stop = stop or threading.Event()
    background = config.model_copy(update={"blocking": False})
    lock = leader_lock(config)
    try:
        while not stop.is_set():
            if not lock.try_acquire():
                log.info("schedule: another scheduler is the leader; standing by")
                stop.wait(config.leader_poll_s)
                continue
            log.info("schedule: leader for %s", config.effective_job_id)
            scheduler = build_scheduler(background)
            scheduler.start()
            try:
                while not stop.wait(config.leader_poll_s):
                    if not lock.held():
                        log.error("schedule: leadership lost; stopping the scheduler")
                        break
            finally:
                scheduler.shutdown(wait=True)
                lock.release()
    finally:
        lock.release()


def _missed_run_time(store: SQLJobStore, job_id: str, trigger: CronTrigger) -> datetime | None:
    """The stored next run time when it is earlier than what the trigger gives from now (a missed run)."""
    try:
        existing = store.lookup_job(job_id)
    except (TargetError, ConfigError):
        raise
    except Exception as exc:  # unpicklable state from another version: replaced by add_job anyway
        log.warning("schedule: stored job %s cannot be read (%s); it will be replaced", job_id, exc)
        return None
    if existing is None or existing.next_run_time is None:
        return None
    stored = cast(datetime, existing.next_run_time)
    fresh = trigger.get_next_fire_time(None, datetime.now(UTC))
    if fresh is None or stored < fresh:
        return stored
    return None


__all__ = [
    "JOB_FUNC",
    "RunFunction",
    "build_scheduler",
    "job_kwargs",
    "resolve_runner",
    "run_now",
    "run_scheduled",
    "serve",
]
