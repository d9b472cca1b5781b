"""Quarterly schedule: trigger, job options, config errors, run guard and the run paths (SQLite store)."""

from __future__ import annotations

import calendar
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent

from firedrill import schedule
from firedrill.errors import ConfigError, TargetError

CALLS: list[tuple[list[str], str, str]] = []
CALLED = threading.Event()


def fake_runner(drills: list[str], environment: str, via: str) -> int:
    CALLS.append((list(drills), environment, via))
    CALLED.set()
    return 3


RUNNER = f"{__name__}:fake_runner"


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()
    CALLED.clear()


def config(tmp_path: Path, **overrides: object) -> schedule.ScheduleConfig:
    data: dict[str, object] = {
        "drills": ["pg-failover", "redis-failover"],
        "environment": "local",
        "job_store": str(tmp_path / "sched" / "schedule.sqlite"),
        "runner": RUNNER,
    }
    data.update(overrides)
    return schedule.ScheduleConfig.from_mapping(data)


# ------------------------------------------------------------------------------------- trigger


def first_monday(year: int, month: int) -> int:
    return next(d for d in range(1, 8) if calendar.weekday(year, month, d) == calendar.MONDAY)


def test_next_four_quarterly_runs_from_2026_11_25(tmp_path: Path) -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    got = schedule.next_run_times(config(tmp_path), n=4, now=now)
    assert got == [
        datetime(2027, 1, 4, 9, 0, tzinfo=UTC),
        datetime(2027, 4, 5, 9, 0, tzinfo=UTC),
        datetime(2027, 7, 5, 9, 0, tzinfo=UTC),
        datetime(2027, 10, 4, 9, 0, tzinfo=UTC),
    ]
    # Cross-check against the calendar module, independently of APScheduler.
    assert [(t.month, t.day) for t in got] == [(m, first_monday(2027, m)) for m in (1, 4, 7, 10)]
    assert all(t.weekday() == 0 and t.utcoffset() == timedelta(0) for t in got)


def test_next_run_times_on_the_fire_time_itself_moves_on(tmp_path: Path) -> None:
    got = schedule.next_run_times(config(tmp_path), n=2, now=datetime(2027, 1, 4, 9, 0, 1, tzinfo=UTC))
    assert got[0] == datetime(2027, 4, 5, 9, 0, tzinfo=UTC)


def test_custom_cron_and_timezone(tmp_path: Path) -> None:
    cfg = config(tmp_path, cron={"month": "*", "day": "15", "hour": "6", "timezone": "Europe/Berlin"})
    got = schedule.next_run_times(cfg, n=2, now=datetime(2026, 11, 25, tzinfo=UTC))
    assert [t.astimezone(UTC) for t in got] == [
        datetime(2026, 12, 15, 5, 0, tzinfo=UTC),
        datetime(2027, 1, 15, 5, 0, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("cron", "field"),
    [
        ({"hour": "25"}, "'hour'"),
        ({"day": "1st xyz"}, "'day'"),
        ({"month": "13"}, "'month'"),
        ({"day_of_week": "funday"}, "'day_of_week'"),
        ({"minute": "*/0"}, "'minute'"),
        ({"timezone": "Mars/Olympus_Mons"}, "'timezone'"),
    ],
)
def test_bad_cron_field_is_a_config_error_naming_it(tmp_path: Path, cron: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError, match=field) as err:
        config(tmp_path, cron=cron)
    assert "\n" not in str(err.value)
    cfg = schedule.ScheduleConfig(drills=["d"], environment="local", cron=schedule.CronFields(**cron))
    with pytest.raises(ConfigError, match=field):
        schedule.build_scheduler(cfg)
    with pytest.raises(ConfigError, match=field):
        schedule.next_run_times(cfg)


def test_other_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"schedule\.cron\.hours"):
        config(tmp_path, cron={"hours": "9"})
    with pytest.raises(ConfigError, match=r"schedule\.misfire_grace_hours"):
        config(tmp_path, misfire_grace_hours=0)
    with pytest.raises(ConfigError, match=r"schedule\.drills"):
        config(tmp_path, drills=[])
    with pytest.raises(ConfigError, match="never fire"):
        config(tmp_path, cron={"year": "2001"})
    with pytest.raises(ConfigError, match="unsupported URL scheme"):
        config(tmp_path, job_store="mysql://u:pw@db/x")
    with pytest.raises(ConfigError, match="pg_schema"):
        config(tmp_path, pg_schema="x; drop table y")


def test_quarter_of() -> None:
    assert schedule.quarter_of(datetime(2026, 11, 25, tzinfo=UTC)) == "2026-Q4"
    assert schedule.quarter_of(datetime(2027, 1, 4, 9)) == "2027-Q1"
    assert schedule.quarter_of(datetime(2027, 6, 30, 23, 59)) == "2027-Q2"
    assert schedule.quarter_of(datetime(2027, 7, 1)) == "2027-Q3"
    new_york = timezone(timedelta(hours=-5))
    assert schedule.quarter_of(datetime(2026, 12, 31, 20, 0, tzinfo=new_york)) == "2027-Q1"


# ------------------------------------------------------------------------------------- the job


def test_job_options(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    sched = schedule.build_scheduler(cfg)
    job = sched.get_job("firedrill-local")
    assert job.func_ref == "firedrill.schedule.service:run_scheduled" == schedule.JOB_FUNC
    assert job.misfire_grace_time == 6 * 3600
    assert job.coalesce is True
    assert job.max_instances == 1
    assert job.kwargs == {
        "drills": ["pg-failover", "redis-failover"],
        "environment": "local",
        "runner": RUNNER,
        "job_store": cfg.job_store,
        "pg_schema": "public",
    }
    assert str(job.trigger) == "cron[month='1,4,7,10', day='1st mon', hour='9', minute='0']"
    assert type(sched).__name__ == "BackgroundScheduler"
    assert type(schedule.build_scheduler(config(tmp_path, blocking=True))).__name__ == "BlockingScheduler"
    grace = schedule.build_scheduler(config(tmp_path, misfire_grace_hours=1.5)).get_job("firedrill-local")
    assert grace.misfire_grace_time == 5400


def test_job_persists_in_the_sqlite_store_and_is_replaced_not_duplicated(tmp_path: Path) -> None:
    cfg = config(tmp_path, job_id="quarterly")
    for _ in range(2):
        sched = schedule.build_scheduler(cfg)
        sched.start(paused=True)
        sched.shutdown(wait=False)
    store = schedule.make_job_store(cfg)
    jobs = store.get_all_jobs()
    assert [j.id for j in jobs] == ["quarterly"]
    assert jobs[0].misfire_grace_time == 6 * 3600 and jobs[0].coalesce and jobs[0].max_instances == 1
    assert jobs[0].next_run_time == schedule.next_run_times(cfg, n=1)[0]
    assert store.get_next_run_time() == jobs[0].next_run_time
    with sqlite3.connect(tmp_path / "sched" / "schedule.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM firedrill_schedule_jobs").fetchone() == (1,)


def _start_due(cfg: schedule.ScheduleConfig, due: datetime) -> tuple[object, list[JobExecutionEvent]]:
    """Pretend the scheduler was down at `due`: store the job with that run time, then start afresh."""
    first = schedule.build_scheduler(cfg)
    first.start(paused=True)
    first.shutdown(wait=True)
    # Edit the stored job directly: modify_job() would wake a scheduler that is shutting down.
    store = schedule.make_job_store(cfg)
    job = store.lookup_job(cfg.effective_job_id)
    assert job is not None
    state = job.__getstate__()
    state["next_run_time"] = due
    job.__setstate__(state)
    store.update_job(job)
    sched = schedule.build_scheduler(cfg)
    assert sched.get_job(cfg.effective_job_id).next_run_time == due  # carried over, not recomputed
    events: list[JobExecutionEvent] = []
    sched.add_listener(events.append, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED)
    sched.start()
    return sched, events


def test_a_run_missed_within_the_grace_period_still_runs_after_a_restart(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    sched, events = _start_due(cfg, datetime.now(UTC) - timedelta(hours=1))
    try:
        assert CALLED.wait(10), "the missed run did not run"
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sched.shutdown(wait=True)  # type: ignore[attr-defined]
    assert CALLS == [(["pg-failover", "redis-failover"], "local", "schedule")]
    assert [e.code for e in events] == [EVENT_JOB_EXECUTED]
    assert events[0].retval == 3
    # Rescheduled to the next quarter after the run.
    job = schedule.make_job_store(cfg).lookup_job(cfg.effective_job_id)
    assert job is not None and job.next_run_time > datetime.now(UTC)


def test_a_run_missed_beyond_the_grace_period_is_logged_as_missed(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    sched, events = _start_due(cfg, datetime.now(UTC) - timedelta(hours=7))
    try:
        deadline = time.monotonic() + 10
        while not events and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sched.shutdown(wait=True)  # type: ignore[attr-defined]
    assert [e.code for e in events] == [EVENT_JOB_MISSED]
    assert CALLS == []


# ------------------------------------------------------------------------------------- run paths + guard


def test_run_now_calls_the_runner_once_per_quarter(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    now = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)
    assert schedule.run_now(cfg, now=now) == 3
    assert CALLS == [(["pg-failover", "redis-failover"], "local", "schedule")]
    assert schedule.run_now(cfg, now=now + timedelta(days=30)) == 0  # same quarter: guarded
    assert len(CALLS) == 1
    assert schedule.run_now(cfg, now=datetime(2027, 4, 5, 9, tzinfo=UTC), via="cli") == 3  # next quarter
    assert CALLS[-1][2] == "cli"
    rows = schedule.claimed_runs(cfg.job_store)
    assert [(d, e, q) for d, e, q, _ in rows] == [
        ("pg-failover", "local", "2027-Q1"),
        ("redis-failover", "local", "2027-Q1"),
        ("pg-failover", "local", "2027-Q2"),
        ("redis-failover", "local", "2027-Q2"),
    ]
    assert all(r[3] and r[3].startswith("sched-") for r in rows)


def test_run_scheduled_runs_only_unclaimed_drills_with_a_callable_runner(tmp_path: Path) -> None:
    store = str(tmp_path / "s.sqlite")
    now = datetime(2026, 11, 25, tzinfo=UTC)
    assert schedule.claim_run(store, "pg-failover", "staging", "2026-Q4")
    seen: list[list[str]] = []

    def runner(drills: list[str], environment: str, via: str) -> int:
        seen.append(drills)
        assert (environment, via) == ("staging", "schedule")
        return 0

    rc = schedule.run_scheduled(["pg-failover", "pitr"], "staging", runner=runner, job_store=store, now=now)
    assert rc == 0 and seen == [["pitr"]]
    # A different environment is a different claim.
    assert schedule.claim_run(store, "pg-failover", "local", "2026-Q4")


def test_claim_run_on_an_open_sqlite_connection_and_bad_quarter(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "c.sqlite")
    try:
        assert schedule.claim_run(conn, "d", "e", "2026-Q4", run_id="r1") is True
        assert schedule.claim_run(conn, "d", "e", "2026-Q4", run_id="r2") is False
        assert conn.execute("SELECT run_id FROM firedrill_schedule_runs").fetchall() == [("r1",)]
    finally:
        conn.close()
    with pytest.raises(ConfigError, match="2026-Q4"):
        schedule.claim_run(str(tmp_path / "c.sqlite"), "d", "e", "2026Q4")


def test_sqlite_errors_become_target_errors(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    with pytest.raises(TargetError) as err:
        schedule.claim_run(str(tmp_path / "adir"), "d", "e", "2026-Q4")
    assert err.value.code == "SQLITE_CANTOPEN"


def test_resolve_runner() -> None:
    assert schedule.resolve_runner(RUNNER) is fake_runner
    assert schedule.resolve_runner(fake_runner) is fake_runner
    for bad, words in [
        ("no_colon", "module:function"),
        ("no_such_module_xyz:f", "cannot import"),
        (f"{__name__}:nope", "has no nope"),
        (f"{__name__}:RUNNER", "not callable"),
    ]:
        with pytest.raises(ConfigError, match=words):
            schedule.resolve_runner(bad)


def test_scheduled_job_fires_and_calls_the_runner(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    sched = schedule.build_scheduler(cfg)
    sched.start(paused=True)
    try:
        sched.modify_job(cfg.effective_job_id, next_run_time=datetime.now(UTC))
        sched.resume()
        assert CALLED.wait(10)
    finally:
        sched.shutdown(wait=True)
    assert CALLS == [(["pg-failover", "redis-failover"], "local", "schedule")]


# ------------------------------------------------------------------------------------- leader election


def test_file_leader_lock_admits_one_leader(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    a, b = schedule.leader_lock(cfg), schedule.leader_lock(cfg)
    assert a.try_acquire() and a.held()
    assert not b.try_acquire() and not b.held()
    a.release()
    assert b.try_acquire()
    b.release()


def test_serve_runs_the_scheduler_only_on_the_leader(tmp_path: Path) -> None:
    cfg = config(tmp_path, leader_poll_s=0.05)
    blocker = schedule.leader_lock(cfg)
    assert blocker.try_acquire()  # someone else leads
    stop = threading.Event()
    thread = threading.Thread(target=schedule.serve, args=(cfg, stop), daemon=True)
    thread.start()
    try:
        time.sleep(0.3)
        store = schedule.make_job_store(cfg)
        assert store.get_all_jobs() == []  # a standby never starts its scheduler
        blocker.release()
        deadline = time.monotonic() + 5
        while not store.get_all_jobs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [j.id for j in store.get_all_jobs()] == ["firedrill-local"]
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
