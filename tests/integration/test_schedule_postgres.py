"""Two schedulers on ONE PostgreSQL job store run a due drill once.

The job store is a PostgreSQL that the tests start themselves (the local staging's primary, on a free
loopback port; the machine's own PostgreSQL on 5432 is never touched): each test creates its own
schema and drops it afterwards.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent

from firedrill import schedule
from firedrill.errors import TargetError
from firedrill.staging.postgres import DATABASE, SUPERUSER, PgStaging

PG_URL = ""  # set by the module fixture below, once its PostgreSQL runs


@pytest.fixture(scope="module", autouse=True)
def _job_store_server() -> Iterator[None]:
    global PG_URL
    with PgStaging() as staging:
        PG_URL = f"postgresql://{SUPERUSER}@127.0.0.1:{staging.primary.port}/{DATABASE}"
        yield


RUNS: list[tuple[list[str], str, str]] = []
RUNS_LOCK = threading.Lock()


def record_run(drills: list[str], environment: str, via: str) -> int:
    time.sleep(0.2)  # a drill takes time: the other scheduler gets its chance to fire meanwhile
    with RUNS_LOCK:
        RUNS.append((list(drills), environment, via))
    return 0


@pytest.fixture(autouse=True)
def _reset() -> None:
    RUNS.clear()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    name = f"fd_sched_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        pytest.fail(f"the job store PostgreSQL at {PG_URL} is not reachable: {exc}")
    with conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
        try:
            yield name
        finally:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def make_config(schema: str, **overrides: object) -> schedule.ScheduleConfig:
    data: dict[str, object] = {
        "drills": ["pg-failover", "redis-failover"],
        "environment": "staging",
        "job_store": PG_URL,
        "pg_schema": schema,
        "runner": f"{__name__}:record_run",
    }
    data.update(overrides)
    return schedule.ScheduleConfig.from_mapping(data)


def make_due(cfg: schedule.ScheduleConfig) -> None:
    """Store the job as if its run time had just passed while no scheduler was running."""
    first = schedule.build_scheduler(cfg)
    first.start(paused=True)
    first.shutdown(wait=True)
    store = schedule.make_job_store(cfg)
    job = store.lookup_job(cfg.effective_job_id)
    assert job is not None
    state = job.__getstate__()
    state["next_run_time"] = datetime.now(UTC) - timedelta(seconds=1)
    job.__setstate__(state)
    store.update_job(job)


def wait_for(check: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(check) and check():
            return True
        time.sleep(0.05)
    return False


def drill_counts() -> Counter[str]:
    with RUNS_LOCK:
        return Counter(d for drills, _, _ in RUNS for d in drills)


def test_two_schedulers_on_one_store_run_a_due_drill_once(pg_schema: str) -> None:
    cfg = make_config(pg_schema)
    make_due(cfg)
    executed: list[JobExecutionEvent] = []
    a, b = schedule.build_scheduler(cfg), schedule.build_scheduler(cfg)
    for s in (a, b):
        s.add_listener(executed.append, EVENT_JOB_EXECUTED)
    a.start()
    b.start()
    try:
        assert wait_for(lambda: sum(drill_counts().values()) >= 2), f"drills did not run: {RUNS}"
        time.sleep(1.0)  # give a second firing every chance to show up
    finally:
        a.shutdown(wait=True)
        b.shutdown(wait=True)
    # Both schedulers may have fired the job (APScheduler 3 does not coordinate them); the run guard
    # makes sure each drill ran once in this quarter.
    assert drill_counts() == Counter({"pg-failover": 1, "redis-failover": 1}), RUNS
    assert 1 <= len(executed) <= 2
    rows = schedule.claimed_runs(PG_URL, schema=pg_schema)
    quarter = schedule.quarter_of(datetime.now(UTC))
    assert sorted((d, e, q) for d, e, q, _ in rows) == [
        ("pg-failover", "staging", quarter),
        ("redis-failover", "staging", quarter),
    ]
    # The job was moved on to the next quarter in the shared store.
    job = schedule.make_job_store(cfg).lookup_job(cfg.effective_job_id)
    assert job is not None and job.next_run_time > datetime.now(UTC)


def test_concurrent_claims_only_one_wins(pg_schema: str) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        results.append(schedule.claim_run(PG_URL, "pitr", "staging", "2027-Q1", schema=pg_schema))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(results) == [False] * 7 + [True]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        assert schedule.claim_run(conn, "pitr", "staging", "2027-Q1", schema=pg_schema) is False
        assert schedule.claim_run(conn, "pitr", "staging", "2027-Q2", schema=pg_schema) is True
        count = conn.execute(f'SELECT count(*) FROM "{pg_schema}".firedrill_schedule_runs').fetchone()
    assert count == (2,)


def advisory_holders(key: int) -> list[int]:
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s AND objid = %s AND objsubid = 1",
            (unsigned >> 32, unsigned & 0xFFFFFFFF),
        ).fetchall()
    return [r[0] for r in rows]


def test_advisory_lock_elects_one_leader_and_notices_a_lost_session(pg_schema: str) -> None:
    cfg = make_config(pg_schema)
    a, b = schedule.leader_lock(cfg), schedule.leader_lock(cfg)
    assert isinstance(a, schedule.PostgresLeaderLock) and isinstance(b, schedule.PostgresLeaderLock)
    try:
        assert a.try_acquire() and a.held()
        assert not b.try_acquire() and not b.held()
        holders = advisory_holders(a.key)
        assert len(holders) == 1
        with psycopg.connect(PG_URL, autocommit=True) as conn:  # the leader's session dies
            conn.execute("SELECT pg_terminate_backend(%s)", (holders[0],))
        assert wait_for(lambda: not a.held(), 5)
        assert b.try_acquire()
        a_again = a.try_acquire()
        assert not a_again
    finally:
        a.release()
        b.release()
    assert advisory_holders(a.key) == []


def test_serve_with_two_candidates_runs_the_due_drill_once(pg_schema: str) -> None:
    cfg = make_config(pg_schema, leader_poll_s=0.1)
    make_due(cfg)
    key = schedule.leader_lock(cfg).key  # type: ignore[union-attr]
    stops = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=schedule.serve, args=(cfg, s), daemon=True) for s in stops]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: sum(drill_counts().values()) >= 2), f"drills did not run: {RUNS}"
        time.sleep(0.5)
        assert len(advisory_holders(key)) == 1  # one leader, one standby
        assert drill_counts() == Counter({"pg-failover": 1, "redis-failover": 1})
        stops[0].set()
        threads[0].join(10)
        assert wait_for(lambda: len(advisory_holders(key)) == 1, 5)  # the other one leads now
    finally:
        for s in stops:
            s.set()
        for t in threads:
            t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert advisory_holders(key) == []
    assert drill_counts() == Counter({"pg-failover": 1, "redis-failover": 1})


def test_psycopg_errors_become_target_errors(pg_schema: str) -> None:
    with pytest.raises(TargetError) as missing_schema:
        schedule.claim_run(PG_URL, "d", "e", "2027-Q1", schema="fd_no_such_schema_x")
    assert missing_schema.value.code == "3F000"
    with pytest.raises(TargetError) as refused:
        schedule.claim_run("postgresql://postgres:s3cret@127.0.0.1:1/test", "d", "e", "2027-Q1")
    assert refused.value.code == "OperationalError"
    assert "s3cret" not in str(refused.value) and "\n" not in str(refused.value)
