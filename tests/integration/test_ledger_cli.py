"""`firedrill verify`, `schedule`, `evidence-report` and `ledger ...` as a user runs them (subprocesses),
and the after-run hook that fills the ledger (in process, and through `DrillRun.finish`)."""

from __future__ import annotations

import calendar
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from firedrill.audit import ledger
from firedrill.audit.signing import generate_key
from firedrill.config import LedgerSettings, MetricsSettings, NotifySettings, Settings
from firedrill.drills.base import DrillRun
from firedrill.evidence import EvidenceRecord, Measurements, load_evidence, write_evidence
from firedrill.publish.hook import ledger_dir_for, record_run, run_hook
from firedrill.run_context import RunContext, default_ledger, default_out
from tests.fixtures.browser import chromium, requires_chromium
from tests.fixtures.evidence_factory import make_failed_record, make_record

FIREDRILL = [sys.executable, "-m", "firedrill.cli.main"]
REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_IDS = ["r1-q1", "r2-q2", "r3-q4", "r4-q4"]
STARTS = ["2026-01-05T09:00:02Z", "2026-04-06T09:00:02Z", "2026-10-05T09:00:02Z", "2026-10-06T10:00:00Z"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREDRILL_")}
    env.update(extra)
    return env


def firedrill(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FIREDRILL, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env or clean_env(),
        cwd=cwd or REPO_ROOT,
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def records() -> list[EvidenceRecord]:
    out = []
    for i, (run_id, start) in enumerate(zip(RUN_IDS, STARTS, strict=True)):
        factory = make_failed_record if i == 1 else make_record
        out.append(factory(run_id=run_id, started_at=start, finished_at=start))
    return out


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    d = tmp_path / "ledger"
    for r in records():
        ledger.append(d, r)
    return d


def name(d: Path, seq: int) -> Path:
    [path] = d.glob(f"{seq:06d}-*.json")
    return path


def canonical(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"


# ------------------------------------------------------------------------------------- verify


def test_verify_passes_on_an_untouched_ledger(plain: Path) -> None:
    proc = firedrill("verify", plain)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ledger OK: 4 records, chain and HEAD intact")
    head = ledger.read_head(plain)
    assert head is not None and f"HEAD: record 4, sha256 {head.sha256}" in proc.stdout
    assert proc.stderr == ""


def _modify_middle(d: Path) -> None:
    path = name(d, 2)
    doc = json.loads(path.read_text())
    doc["measurements"]["rto_s"] = 1.0  # a nicer RTO, stored in canonical form
    path.write_text(canonical(doc))


def _modify_last(d: Path) -> None:
    path = name(d, 4)
    doc = json.loads(path.read_text())
    doc["verdict"] = "failed"
    path.write_text(canonical(doc))


def _modify_whitespace(d: Path) -> None:
    path = name(d, 1)
    path.write_text(json.dumps(json.loads(path.read_text()), indent=1) + "\n")


def _delete_middle(d: Path) -> None:
    name(d, 2).unlink()


def _delete_last(d: Path) -> None:
    name(d, 4).unlink()


def _insert_after_head(d: Path) -> None:
    doc = json.loads(name(d, 4).read_text())
    doc["run_id"] = "r5-forged"
    (d / "000005-r5-forged.json").write_text(canonical(doc))


def _insert_duplicate_seq(d: Path) -> None:
    doc = json.loads(name(d, 2).read_text())
    doc["run_id"] = "r2-forged"
    (d / "000002-r2-forged.json").write_text(canonical(doc))


def _insert_renumbered(d: Path) -> None:
    """A forged record 2, the genuine 2..4 shifted to 3..5 (HEAD edited to follow)."""
    for seq in (4, 3, 2):
        path = name(d, seq)
        path.rename(d / path.name.replace(f"{seq:06d}-", f"{seq + 1:06d}-"))
    doc = json.loads(name(d, 1).read_text())
    doc["run_id"] = "r1b-forged"
    (d / "000002-r1b-forged.json").write_text(canonical(doc))
    head = json.loads((d / "HEAD").read_text())
    head["seq"], head["file"] = 5, head["file"].replace("000004-", "000005-")
    (d / "HEAD").write_text(canonical(head))


def _reorder_by_renaming(d: Path) -> None:
    two, three = name(d, 2), name(d, 3)
    tmp = d / "swap.tmp"
    two.rename(tmp)
    three.rename(d / three.name.replace("000003-", "000002-"))
    tmp.rename(d / two.name.replace("000002-", "000003-"))


def _reorder_contents(d: Path) -> None:
    two, three = name(d, 2), name(d, 3)
    a, b = two.read_bytes(), three.read_bytes()
    two.write_bytes(b)
    three.write_bytes(a)


@pytest.mark.parametrize(
    ("tamper", "needle"),
    [
        (_modify_middle, "record 3 (000003-r3-q4.json): prev_sha256 does not match record 2"),
        (_modify_last, "record 4 (000004-r4-q4.json): does not match HEAD"),
        (_modify_whitespace, "record 1 (000001-r1-q1.json): not stored in canonical form"),
        (_delete_middle, "record 2 (000002-*.json): missing (sequence numbers jump from 1 to 3)"),
        (_delete_last, "record 4 (000004-r4-q4.json): missing: HEAD says the ledger ends at record 4"),
        (_insert_after_head, "record 5 (000005-r5-forged.json): not covered by HEAD"),
        (_insert_duplicate_seq, "record 2 (000002-r2-forged.json): 2 files share sequence number 2"),
        (_insert_renumbered, "record 2 (000002-r1b-forged.json): prev_sha256 does not match record 1"),
        (_reorder_by_renaming, "record 2 (000002-r3-q4.json): prev_sha256 does not match record 1"),
        (_reorder_contents, "record 2 (000002-r2-q2.json): run_id 'r3-q4' does not match the file name"),
    ],
    ids=[
        "modify-middle",
        "modify-last",
        "modify-bytes",
        "delete-middle",
        "delete-last",
        "insert-after-head",
        "insert-duplicate",
        "insert-renumbered",
        "reorder-rename",
        "reorder-contents",
    ],
)
def test_verify_fails_on_each_kind_of_tampering(plain: Path, tamper: Any, needle: str) -> None:
    tamper(plain)
    proc = firedrill("verify", plain)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_line(proc)
    assert line.startswith("firedrill: ledger BROKEN: "), line
    assert needle in line, line
    assert proc.stdout == ""


def test_signed_ledger_forgery_is_caught_only_with_the_public_key(tmp_path: Path) -> None:
    """Rewrite record 2, re-chain 3 and 4 and HEAD without the key: the chain verifies, signatures not."""
    signer = generate_key(tmp_path / "signing.pem")
    pub = tmp_path / "ledger.pub"
    pub.write_text(signer.public_key_pem())
    d = tmp_path / "ledger"
    for r in records():
        ledger.append(d, r, signer)
    assert firedrill("verify", d, "--public-key", pub).returncode == 0

    forged = tmp_path / "forged"
    forged.mkdir()
    prev: str | None = None
    for seq in range(1, 5):
        src = name(d, seq)
        record = EvidenceRecord.model_validate_json(src.read_bytes())
        if seq == 2:
            m = record.measurements.model_copy(update={"rto_s": 1.0})
            record = record.model_copy(update={"measurements": m})
        record = record.model_copy(update={"prev_sha256": prev})
        (forged / src.name).write_text(record.canonical_json() + "\n")
        shutil.copy(src.with_suffix(".sig"), forged / src.with_suffix(".sig").name)
        prev = record.sha256()
    head = json.loads((d / "HEAD").read_text())
    head.update(sha256=prev, signature=None)
    (forged / "HEAD").write_text(canonical(head))

    unchecked = firedrill("verify", forged)
    assert unchecked.returncode == 0  # the documented limit of an unsigned check
    assert "signatures NOT checked" in unchecked.stdout
    assert f"HEAD names signing key {signer.fingerprint()}: pass --public-key" in unchecked.stdout
    checked = firedrill("verify", forged, "--public-key", pub)
    assert checked.returncode == 1
    assert "record 2 (000002-r2-q2.json): signature does not verify" in one_line(checked)
    # The public half of $FIREDRILL_SIGNING_KEY is used when no --public-key is given.
    by_env = firedrill(
        "verify", forged, env=clean_env(FIREDRILL_SIGNING_KEY=(tmp_path / "signing.pem").read_text())
    )
    assert by_env.returncode == 1 and "signature does not verify" in one_line(by_env)
    assert "PRIVATE KEY" not in by_env.stdout + by_env.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["verify", "/nonexistent/ledger"], "ledger directory not found: /nonexistent/ledger"),
        (["verify"], "Missing argument 'LEDGER_DIR'"),
        (
            ["evidence-report", "--from", "2026-13-01", "--to", "2026-12-31"],
            "--from '2026-13-01' is not a date",
        ),
        (["evidence-report", "--from", "2026-01-01", "--to", "tomorrow"], "--to 'tomorrow' is not a date"),
        (
            ["evidence-report", "--from", "2026-12-31", "--to", "2026-01-01"],
            "--from 2026-12-31 is after --to",
        ),
        (["evidence-report", "--to", "2026-01-01"], "Missing option '--from'"),
        (
            ["evidence-report", "--from", "2026-01-01", "--to", "2026-12-31", "--ledger", "/nonexistent"],
            "ledger directory not found: /nonexistent",
        ),
        (["schedule", "--list", "nosuchdrill"], "unknown drill 'nosuchdrill'"),
        (["schedule", "--list", "--env", "nowhere"], "unknown environment 'nowhere'"),
        (["schedule", "--list", "--run-now"], "--list and --run-now cannot be combined"),
        (["ledger", "append", "/nonexistent/evidence.json"], "evidence file not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    proc = firedrill(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in one_line(proc)


def test_bad_findings_file_names_the_field(plain: Path, tmp_path: Path) -> None:
    findings = tmp_path / "findings.toml"
    findings.write_text('[[findings]]\nid = "F-1"\ntitle = "x"\nowner = "o"\nstatus = "done"\n')
    proc = firedrill(
        "evidence-report", "--from", "2026-01-01", "--to", "2026-12-31", "--ledger", plain,
        "--findings", findings, "--out", tmp_path / "out",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "findings.0.status" in one_line(proc)


# ------------------------------------------------------------------------------------- schedule


def expected_quarterly(now: datetime, n: int = 4) -> list[datetime]:
    """The first Mondays of Jan/Apr/Jul/Oct at 09:00 UTC after `now`, from the calendar module."""
    out: list[datetime] = []
    year = now.year
    while len(out) < n:
        for month in (1, 4, 7, 10):
            day = next(d for d in range(1, 8) if calendar.weekday(year, month, d) == calendar.MONDAY)
            t = datetime(year, month, day, 9, 0, tzinfo=UTC)
            if t > now and len(out) < n:
                out.append(t)
        year += 1
    return out


def test_schedule_list_shows_the_next_four_quarterly_runs() -> None:
    before = datetime.now(UTC)
    proc = firedrill("schedule", "--list", "failover")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "failover on local: quarterly, first Monday of Jan/Apr/Jul/Oct at 09:00 UTC" in lines[0]
    runs = [ln.strip() for ln in lines if ln.startswith("  20")]
    want = expected_quarterly(before)
    assert runs == [f"{t:%Y-%m-%d %H:%M} UTC  Mon  {t.year}-Q{(t.month - 1) // 3 + 1}" for t in want]
    assert lines[2] == "next 4 runs:"


def test_schedule_reads_its_section_and_never_prints_a_store_password(tmp_path: Path) -> None:
    cfg = tmp_path / "firedrill.toml"
    cfg.write_text(
        '[schedule]\ndrills = ["failover"]\nenvironment = "local"\njob_store_env = "SCHED_DB"\n'
        '[schedule.cron]\nmonth = "*"\nday = "15"\nhour = "6"\ntimezone = "Europe/Berlin"\n'
    )
    env = clean_env(SCHED_DB="postgresql://drill:s3cret-pw@db.internal:5433/firedrill")
    proc = firedrill("schedule", "--list", "--count", "2", "--config", cfg, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "s3cret-pw" not in proc.stdout + proc.stderr
    assert "PostgreSQL postgresql://db.internal:5433/firedrill" in proc.stdout
    assert "cron(month='*', day='15', hour='6', minute='0') Europe/Berlin" in proc.stdout.splitlines()[0]
    runs = [ln.strip() for ln in proc.stdout.splitlines() if ln.startswith("  20")]
    assert len(runs) == 2
    for run in runs:  # 06:00 in Berlin is 05:00 UTC in winter, 04:00 UTC in summer
        assert re.fullmatch(
            r"\d{4}-\d\d-15 0[45]:00 UTC  \w{3}  \d{4}-Q[1-4]  \(\d{4}-\d\d-15 06:00 CES?T\)", run
        ), run
    missing = firedrill("schedule", "--list", "--config", cfg)
    assert missing.returncode == 2 and "environment variable SCHED_DB is not set" in one_line(missing)


def fake_runner(drills: list[str], environment: str, via: str) -> int:
    """The scheduler's runner in the --run-now test (imported by the firedrill subprocess)."""
    with open(os.environ["FAKE_RUNNER_LOG"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps([drills, environment, via]) + "\n")
    return 1


def test_schedule_run_now_runs_once_per_quarter_through_the_scheduled_path(tmp_path: Path) -> None:
    cfg = tmp_path / "firedrill.toml"
    cfg.write_text(
        '[schedule]\ndrills = ["failover"]\njob_store = "sched/schedule.sqlite"\n'
        'runner = "tests.integration.test_ledger_cli:fake_runner"\n'
    )
    log = tmp_path / "runner.log"
    env = clean_env(FAKE_RUNNER_LOG=str(log))
    first = firedrill("schedule", "--run-now", "--config", cfg, env=env)
    assert first.returncode == 1, first.stderr  # the runner's exit code
    assert json.loads(log.read_text()) == [["failover"], "local", "schedule"]
    assert (tmp_path / "sched" / "schedule.sqlite").is_file()  # relative to the config file
    second = firedrill("schedule", "--run-now", "--config", cfg, env=env)
    assert second.returncode == 0
    assert len(log.read_text().splitlines()) == 1  # claimed for this quarter: not run again


def test_schedule_serve_starts_and_stops_on_sigterm(tmp_path: Path) -> None:
    cfg = tmp_path / "firedrill.toml"
    cfg.write_text('[schedule]\ndrills = ["failover"]\njob_store = "s.sqlite"\n')
    proc = subprocess.Popen(
        [*FIREDRILL, "schedule", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("firedrill scheduler: failover on local: quarterly"), first
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while not (tmp_path / "s.sqlite").exists() and datetime.now(UTC) < deadline:
            threading.Event().wait(0.1)
        assert (tmp_path / "s.sqlite").exists(), "the job store was not created"
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "firedrill scheduler stopped" in out
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------- evidence-report


def report_files(out: Path) -> tuple[Path, Path]:
    return (
        out / "evidence-report-2026-01-01_2026-12-31.html",
        out / "evidence-report-2026-01-01_2026-12-31.md",
    )


def test_evidence_report_for_a_period_with_a_few_records(tmp_path: Path) -> None:
    signer = generate_key(tmp_path / "signing.pem")
    d = tmp_path / "ledger"
    for r in records():
        ledger.append(d, r, signer)
    findings = tmp_path / "findings.json"
    findings.write_text(
        json.dumps(
            {
                "findings": [
                    {
                        "id": "F-7",
                        "title": "Slow promotion",
                        "status": "open",
                        "owner": "DBA team",
                        "run_ids": ["r2-q2"],
                    }
                ]
            }
        )
    )
    out = tmp_path / "out"
    env = clean_env(FIREDRILL_SIGNING_KEY=(tmp_path / "signing.pem").read_text())
    proc = firedrill(
        "evidence-report", "--from", "2026-01-01", "--to", "2026-12-31", "--ledger", d,
        "--findings", findings, "--out", out, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    html, md = report_files(out)
    assert proc.stdout.splitlines()[:2] == [str(html), str(md)]
    assert "4 runs in 2026-01-01 .. 2026-12-31; quarters run: 3 of 4 (not run: 2026-Q3)" in proc.stdout
    assert "ledger OK: 4 records, chain and HEAD intact, signatures verified" in proc.stdout
    text = html.read_text()
    assert signer.fingerprint() in text and "BEGIN PUBLIC KEY" in text
    assert "PRIVATE" not in text + md.read_text() + proc.stdout
    assert "F-7" in text and "Slow promotion" in text
    assert "**FAILED**" in md.read_text() and "2026-Q3 (missed)" in md.read_text()


def test_evidence_report_on_a_tampered_ledger_says_so_and_exits_1(plain: Path, tmp_path: Path) -> None:
    _modify_middle(plain)
    out = tmp_path / "out"
    proc = firedrill(
        "evidence-report", "--from", "2026-01-01", "--to", "2026-12-31", "--ledger", plain, "--out", out
    )
    assert proc.returncode == 1
    assert "record 3 (000003-r3-q4.json): prev_sha256 does not match record 2" in one_line(proc)
    html, _ = report_files(out)
    assert "<small>LEDGER</small>BROKEN" in html.read_text()


@requires_chromium
def test_evidence_report_in_headless_chromium(plain: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = firedrill(
        "evidence-report", "--from", "2026-01-01", "--to", "2026-12-31", "--ledger", plain, "--out", out
    )
    assert proc.returncode == 0, proc.stderr
    html, _ = report_files(out)
    dom = chromium(tmp_path, "--dump-dom", html.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert "<small>OBJECTIVES</small>BREACHED" in page
    assert "<small>LEDGER</small>VERIFIED" in page
    assert page.count('class="tag verdict ok">passed') == 3
    assert page.count('class="tag verdict ko">failed') == 1
    assert "ledger OK: 4 records, chain and HEAD intact" in page
    assert page.count("<svg") >= 1 and 'class="trend-chart"' in page
    png = tmp_path / "period.png"
    shot = chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,3000", html.resolve().as_uri())
    assert png.exists(), shot.stderr[-2000:]
    assert png.stat().st_size > 100_000, "screenshot suspiciously small: blank page?"


# ------------------------------------------------------------------------------------- after-run hook


def evidence_in(out_root: Path, record: EvidenceRecord) -> Path:
    return write_evidence(record, out_root / record.run_id)


def test_hook_chains_the_record_and_rewrites_its_evidence(tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = Settings()
    paths = []
    for r in records()[:3]:
        path = evidence_in(out, r)
        outcome = run_hook(r, path, settings)
        assert outcome.problems == [] and outcome.ledger_dir == out / "ledger"
        paths.append(path)
    stored = [load_evidence(p) for p in paths]
    assert stored[0].prev_sha256 is None
    assert stored[1].prev_sha256 == stored[0].sha256() and stored[2].prev_sha256 == stored[1].sha256()
    in_ledger = list(ledger.iter_records(out / "ledger"))
    assert [r.sha256() for r in in_ledger] == [r.sha256() for r in stored]  # both copies match
    proc = firedrill("verify", out / "ledger")
    assert proc.returncode == 0 and "3 records" in proc.stdout


def test_hook_signs_with_the_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = generate_key(tmp_path / "k.pem")
    monkeypatch.setenv("FIREDRILL_SIGNING_KEY", (tmp_path / "k.pem").read_text())
    out = tmp_path / "out"
    r = records()[0]
    outcome = run_hook(r, evidence_in(out, r), Settings())
    assert outcome.signed_by == signer.fingerprint()
    assert list((out / "ledger").glob("*.sig"))
    assert ledger.verify(out / "ledger", signer.public_key()).ok


def test_hook_failures_never_lose_the_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    settings = Settings(ledger=LedgerSettings(dir=blocker / "ledger"))
    r = records()[0]
    path = evidence_in(out, r)
    before = path.read_bytes()
    with caplog.at_level(logging.ERROR, logger="firedrill.ledger"):
        outcome = run_hook(r, path, settings)
    assert outcome.record == r and path.read_bytes() == before
    [problem] = outcome.problems
    assert "NOT appended" in problem and f"firedrill ledger append {path}" in problem
    assert [rec.getMessage() for rec in caplog.records] == [problem]

    monkeypatch.setenv("FIREDRILL_SIGNING_KEY", "not a key at all")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="firedrill.ledger"):
        outcome = run_hook(r, path, Settings(ledger=LedgerSettings(dir=tmp_path / "l2")))
    assert "signing key unusable" in outcome.problems[0] and "not a key at all" not in outcome.problems[0]
    assert load_evidence(path) == r and not (tmp_path / "l2").exists()

    # And `ledger append` chains it once the key is fixed.
    generate_key(tmp_path / "good.pem")
    cfg = tmp_path / "firedrill.toml"
    cfg.write_text(f'[ledger]\ndir = "l2"\nsigning_key_file = "{tmp_path / "good.pem"}"\n')
    proc = firedrill("ledger", "append", path, "--config", cfg)
    assert proc.returncode == 0, proc.stderr
    assert "r1-q1: record 1 of" in proc.stdout and "signed, key" in proc.stdout
    assert load_evidence(path).sha256() == next(ledger.iter_records(tmp_path / "l2")).sha256()


class _Hook:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []


@pytest.fixture
def webhook() -> Iterator[tuple[str, _Hook]]:
    got = _Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T0KEN-secret", got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_hook_posts_the_webhook_on_failure_and_writes_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: tuple[str, _Hook]
) -> None:
    url, got = webhook
    monkeypatch.setenv("DRILL_WEBHOOK", url)
    monkeypatch.setenv("DB_PASSWORD", "hunter2-db")
    prom = tmp_path / "metrics" / "firedrill.prom"
    settings = Settings(
        notify=NotifySettings(webhook_url_env="DRILL_WEBHOOK", timeout_s=5, secret_envs=["DB_PASSWORD"]),
        metrics=MetricsSettings(textfile=prom),
    )
    out = tmp_path / "out"
    ok, failed = records()[0], records()[1].model_copy(update={"error": "password hunter2-db rejected"})
    assert not run_hook(ok, evidence_in(out, ok), settings).notified
    outcome = run_hook(failed, evidence_in(out, failed), settings)
    assert outcome.notified and outcome.problems == []
    [body] = got.bodies
    text = body.decode()
    assert "FAILED" in text and "r2-q2" in text
    assert "T0KEN-secret" not in text and "hunter2-db" not in text
    gauges = {ln.split("{")[0]: ln.rsplit(" ", 1)[1] for ln in prom.read_text().splitlines() if "{" in ln}
    assert gauges["firedrill_drill_passed"] == "0.0"  # the latest run of that drill failed
    assert gauges["firedrill_lost_writes"] == "3.0"
    assert 'drill="postgres_failover"' in prom.read_text()


def test_hook_webhook_failure_is_one_line_naming_only_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRILL_WEBHOOK", "http://127.0.0.1:9/hooks/T0KEN-secret")  # discard port: refused
    settings = Settings(notify=NotifySettings(webhook_url_env="DRILL_WEBHOOK", timeout_s=2))
    r = records()[1]
    outcome = run_hook(r, evidence_in(tmp_path / "out", r), settings)
    assert not outcome.notified and outcome.seq == 1  # the ledger append still happened
    [problem] = outcome.problems
    assert "webhook for r2-q2 not sent" in problem and "127.0.0.1" in problem
    assert "T0KEN" not in problem


def test_default_ledger_follows_the_output_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the defaults are the caller's ./reports/..., not the install location
    assert (
        ledger_dir_for(LedgerSettings(), default_out()) == default_ledger() == tmp_path / "reports" / "ledger"
    )
    assert ledger_dir_for(LedgerSettings(), tmp_path) == tmp_path / "ledger"
    assert ledger_dir_for(LedgerSettings(dir=tmp_path / "x"), default_out()) == tmp_path / "x"


def test_drill_finish_appends_to_the_ledger_and_renders_the_chained_record(tmp_path: Path) -> None:
    ctx = RunContext(environment="local", via="test", out_root=tmp_path)
    runs = [DrillRun(drill="hooked", scenario=f"scenario {i}", ctx=ctx) for i in range(2)]
    finished = [
        run.finish(Measurements(rto_s=1.0, rpo_window_s=0.0, lost_writes=0), {"rto": 1.0}) for run in runs
    ]
    assert finished[0].prev_sha256 is None and finished[1].prev_sha256 == finished[0].sha256()
    for run, record in zip(runs, finished, strict=True):
        assert run.evidence == record and run.evidence_path is not None
        assert load_evidence(run.evidence_path) == record
    report = (runs[1].run_dir / "report.html").read_text()
    assert finished[0].sha256() in report  # the footer shows the chain link
    assert ledger.verify(tmp_path / "ledger").ok


def test_record_run_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import firedrill.publish.hook as hook

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(hook, "run_hook", boom)
    r = records()[0]
    assert record_run(r, evidence_in(tmp_path, r)) is r


def test_quarterly_helper_matches_the_known_2027_dates() -> None:
    got = expected_quarterly(datetime(2026, 11, 25, 12, tzinfo=UTC))
    assert [t.date() for t in got] == [
        date(2027, 1, 4),
        date(2027, 4, 5),
        date(2027, 7, 5),
        date(2027, 10, 4),
    ]


def test_ledger_archive_to_object_lock_bucket(plain: Path, tmp_path: Path) -> None:
    """`firedrill ledger archive` against moto in server mode: uploads once, refuses a tampered ledger."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="dr-evidence", ObjectLockEnabledForBucket=True)
        s3.create_bucket(Bucket="no-lock")
        env = clean_env(**creds)
        args = ["ledger", "archive", "--ledger", plain, "--region", "us-east-1", "--endpoint-url", endpoint]
        first = firedrill(*args, "--bucket", "dr-evidence", "--retention-days", "30", env=env)
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith(
            "archived 5 new object(s) to s3://dr-evidence/firedrill-ledger"
        )  # 4 records + HEAD
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="dr-evidence")["Contents"]}
        assert "firedrill-ledger/HEAD/000004.json" in keys and "firedrill-ledger/000002-r2-q2.json" in keys
        again = firedrill(*args, "--bucket", "dr-evidence", env=env)
        assert again.returncode == 0 and "archived 0 new object(s)" in again.stdout

        no_lock = firedrill(*args, "--bucket", "no-lock", env=env)
        assert no_lock.returncode == 2 and "no-lock" in one_line(no_lock)
        _modify_middle(plain)
        tampered = firedrill(*args, "--bucket", "dr-evidence", env=env)
        assert tampered.returncode == 2
        assert "does not verify, refusing to archive it" in one_line(tampered)
        assert "testing" not in tampered.stderr
    finally:
        server.stop()


def test_hook_does_not_start_signing_in_the_middle_of_an_unsigned_ledger(
    plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate_key(tmp_path / "k.pem")
    monkeypatch.setenv("FIREDRILL_SIGNING_KEY", (tmp_path / "k.pem").read_text())
    r = make_record(run_id="r5-signed", started_at="2026-11-02T09:00:00Z", finished_at="2026-11-02T09:00:00Z")
    path = evidence_in(tmp_path / "out", r)
    outcome = run_hook(r, path, Settings(ledger=LedgerSettings(dir=plain)))
    [problem] = outcome.problems
    assert "holds 4 unsigned record(s)" in problem and outcome.seq is None
    assert load_evidence(path) == r and ledger.verify(plain).records_checked == 4
