"""The quarterly drill scheduler (APScheduler 3.x), re-exported from its modules:

- `config`: the `[schedule]` model (`ScheduleConfig`), the cron trigger, fire times and quarters;
- `jobstore`: the persistent job store (SQLite file by default, PostgreSQL by URL);
- `leader`: leader election (advisory lock / fcntl lock) and the once-per-quarter run guard;
- `service`: the scheduler, its job (`JOB_FUNC`, `run_scheduled`), `run_now` and `serve`.
"""

from __future__ import annotations

from firedrill.schedule.config import (
    DEFAULT_RUNNER,
    DEFAULT_STORE,
    CronFields,
    ScheduleConfig,
    build_trigger,
    fire_times_between,
    next_run_times,
    quarter_of,
)
from firedrill.schedule.jobstore import PostgresJobStore, SQLiteJobStore, make_job_store
from firedrill.schedule.leader import (
    FileLeaderLock,
    LeaderLock,
    PostgresLeaderLock,
    claim_run,
    claimed_runs,
    leader_lock,
)
from firedrill.schedule.service import (
    JOB_FUNC,
    RunFunction,
    build_scheduler,
    job_kwargs,
    resolve_runner,
    run_now,
    run_scheduled,
    serve,
)

__all__ = [
    "DEFAULT_RUNNER",
    "DEFAULT_STORE",
    "JOB_FUNC",
    "CronFields",
    "FileLeaderLock",
    "LeaderLock",
    "PostgresJobStore",
    "PostgresLeaderLock",
    "RunFunction",
    "SQLiteJobStore",
    "ScheduleConfig",
    "build_scheduler",
    "build_trigger",
    "claim_run",
    "claimed_runs",
    "fire_times_between",
    "job_kwargs",
    "leader_lock",
    "make_job_store",
    "next_run_times",
    "quarter_of",
    "resolve_runner",
    "run_now",
    "run_scheduled",
    "serve",
]
