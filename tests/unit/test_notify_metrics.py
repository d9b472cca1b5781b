"""Webhook notification (to a local http.server) and the Prometheus text file."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from firedrill.errors import ConfigError, TargetError
from firedrill.evidence import (
    Environment,
    EvidenceRecord,
    Measurements,
    Objective,
    ObjectiveVerdict,
    Operator,
    Verdict,
)
from firedrill.publish.metrics import build_registry, write_metrics
from firedrill.publish.notify import (
    NotifyConfig,
    build_message,
    needs_notification,
    notify,
    redact,
    send_webhook,
)

SECRET = "hunter2-Pa$$w0rd/é"
TOKEN = "T0000/B0000/XXXXXXXXXXXXXXXX"


def make_record(
    *,
    run_id: str = "20270104T0900Z-pg-failover-0001",
    drill: str = "pg-failover",
    scenario: str = "primary killed",
    env: str = "staging",
    verdict: Verdict = "failed",
    rto_s: float | None = 950.0,
    rpo_s: float | None = 0.25,
    lost: int | None = 2,
    finished_at: str = "2027-01-04T09:16:00+00:00",
) -> EvidenceRecord:
    met = rto_s is not None and rto_s <= 900
    return EvidenceRecord(
        run_id=run_id,
        drill=drill,
        scenario=scenario,
        fault="kill -9 primary",
        started_at="2027-01-04T09:00:00+00:00",
        finished_at=finished_at,
        duration_s=960.0,
        environment=Environment(
            name=env,
            kind="aws",
            host="runner-7",
            platform="Linux",
            python="3.11",
            firedrill_version="0.1.0",
            git_revision="abc",
            settings={"dsn": f"postgresql://app:{SECRET}@db/prod"},
        ),
        operator=Operator(user="ci", host="runner-7", via="schedule"),
        objectives=[Objective(name="rto", limit=900.0, unit="s", description="15 min")],
        verdicts=[ObjectiveVerdict(objective="rto", limit=900.0, unit="s", measured=rto_s, met=met)],
        checks=[],
        measurements=Measurements(rto_s=rto_s, rpo_window_s=rpo_s, lost_writes=lost),
        verdict=verdict,
        error=f"connection failed: password={SECRET}",
        timeline=[],
        samples=[],
        signoff=[],
        compliance=[],
    )


# ------------------------------------------------------------------------------------- webhook server


@dataclass
class Received:
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def hook() -> Iterator[tuple[str, Received]]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.requests.append((self.path, dict(self.headers.items()), body))
            if self.path.startswith("/fail"):
                self.send_response(500)
                self.end_headers()
                return
            if self.path.startswith("/slow"):
                time.sleep(1.5)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_failed_drill_is_posted_without_secrets(hook: tuple[str, Received]) -> None:
    base, received = hook
    config = NotifyConfig(webhook_url=f"{base}/services/{TOKEN}", secrets=[SECRET], timeout_s=5)
    record = make_record()
    assert notify(record, config, report_path="reports/out/20270104T0900Z-pg-failover-0001/report.html")
    assert len(received.requests) == 1
    path, headers, body = received.requests[0]
    assert path == f"/services/{TOKEN}"
    assert headers["Content-Type"].startswith("application/json")
    raw = body.decode("utf-8")
    for leak in (SECRET, "hunter2", TOKEN, "runner-7", "connection failed"):
        assert leak not in raw
    payload = json.loads(body)
    assert set(payload) == {"text", "blocks"}
    text = payload["text"]
    assert "FAILED" in text and "pg-failover" in text and "primary killed" in text and "staging" in text
    assert "rto 950 s (limit 900 s)" in text
    blocks = payload["blocks"]
    assert blocks[0]["type"] == "header"
    fields = " ".join(f["text"] for f in blocks[1]["fields"])
    assert "*RTO:* 950 s" in fields and "*RPO window:* 0.25 s" in fields and "*Lost writes:* 2" in fields
    assert "Objectives breached" in blocks[2]["text"]["text"]
    context = blocks[-1]["elements"][0]["text"]
    assert "reports/out/20270104T0900Z-pg-failover-0001/report.html" in context
    assert "20270104T0900Z-pg-failover-0001" in context


def test_secret_inside_a_sent_field_is_redacted(hook: tuple[str, Received]) -> None:
    base, received = hook
    config = NotifyConfig(webhook_url=f"{base}/hook", secrets=[SECRET])
    record = make_record(scenario=f"restore with key {SECRET}")
    notify(record, config)
    raw = received.requests[0][2].decode()
    assert SECRET not in raw and json.dumps(SECRET)[1:-1] not in raw
    assert "restore with key [REDACTED]" in json.loads(raw)["text"]


def test_passed_drill_sends_nothing_unless_always(hook: tuple[str, Received]) -> None:
    base, received = hook
    ok = make_record(verdict="passed", rto_s=30.0)
    assert not needs_notification(ok)
    assert not notify(ok, NotifyConfig(webhook_url=f"{base}/hook"))
    assert received.requests == []
    assert notify(ok, NotifyConfig(webhook_url=f"{base}/hook", notify_on="always"))
    assert "PASSED" in json.loads(received.requests[0][2])["text"]
    # Passed overall but an objective missed still notifies.
    assert needs_notification(make_record(verdict="passed", rto_s=950.0))


def test_webhook_failures_are_target_errors_naming_only_the_host(hook: tuple[str, Received]) -> None:
    base, _ = hook
    msg = build_message(make_record())
    with pytest.raises(TargetError) as http_err:
        send_webhook(f"{base}/fail/{TOKEN}", msg)
    assert http_err.value.code == "500"
    assert TOKEN not in str(http_err.value) and "127.0.0.1" in str(http_err.value)
    started = time.monotonic()
    with pytest.raises(TargetError) as slow:
        send_webhook(f"{base}/slow/{TOKEN}", msg, timeout_s=0.3)
    assert slow.value.code == "timeout" and time.monotonic() - started < 1.4
    with pytest.raises(TargetError) as refused:
        send_webhook(f"http://127.0.0.1:1/{TOKEN}", msg, timeout_s=2)
    assert refused.value.code == "URLError" and TOKEN not in str(refused.value)


def test_notify_config_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"notify\.webhook_url") as err:
        NotifyConfig.from_mapping({"webhook_url": f"file:///etc/{TOKEN}"})
    assert TOKEN not in str(err.value)
    with pytest.raises(ConfigError, match=r"notify\.timeout_s"):
        NotifyConfig.from_mapping({"webhook_url": "https://hooks.example/x", "timeout_s": 0})
    with pytest.raises(ConfigError, match="FD_HOOK_UNSET"):
        NotifyConfig.from_mapping({"webhook_url_env": "FD_HOOK_UNSET"})
    monkeypatch.setenv("FD_HOOK", f"https://hooks.example/services/{TOKEN}")
    config = NotifyConfig.from_mapping({"webhook_url_env": "FD_HOOK", "secrets": [SECRET]})
    assert TOKEN not in repr(config) and SECRET not in repr(config)
    assert f"/services/{TOKEN}" in config.all_secrets()


def test_redact_variants() -> None:
    text = f"a {SECRET} b {json.dumps(SECRET)} c pw=hunter2-Pa%24%24w0rd%2F%C3%A9 d"
    out = redact(text, [SECRET])
    assert "hunter2" not in out
    assert out.count("[REDACTED]") == 3
    assert redact("nothing here", ["", SECRET]) == "nothing here"


# ------------------------------------------------------------------------------------- metrics


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_textfile_contains_the_gauges(tmp_path: Path) -> None:
    older = make_record(run_id="r-old", verdict="passed", rto_s=40.0, finished_at="2026-10-05T09:10:00+00:00")
    newer = make_record(run_id="r-new")  # failed, rto 950
    other = make_record(
        run_id="r-cache",
        drill="redis-failover",
        scenario="master killed",
        verdict="passed",
        rto_s=3.5,
        lost=None,
    )
    path = write_metrics(tmp_path / "textfile" / "firedrill.prom", [newer, older, other])
    text = path.read_text()
    for name in (
        "firedrill_rto_seconds",
        "firedrill_rpo_window_seconds",
        "firedrill_lost_writes",
        "firedrill_drill_passed",
        "firedrill_last_run_timestamp_seconds",
    ):
        assert f"# TYPE {name} gauge" in text
    got = samples(path)
    pg = (("drill", "pg-failover"), ("environment", "staging"), ("scenario", "primary killed"))
    redis = (("drill", "redis-failover"), ("environment", "staging"), ("scenario", "master killed"))
    assert got[("firedrill_rto_seconds", pg)] == 950.0  # the newer run wins
    assert got[("firedrill_rpo_window_seconds", pg)] == 0.25
    assert got[("firedrill_lost_writes", pg)] == 2
    assert got[("firedrill_drill_passed", pg)] == 0
    assert got[("firedrill_drill_passed", redis)] == 1
    assert got[("firedrill_rto_seconds", redis)] == 3.5
    assert ("firedrill_lost_writes", redis) not in got  # not measured: absent, not NaN
    expected_ts = datetime.fromisoformat("2027-01-04T09:16:00+00:00").timestamp()
    assert got[("firedrill_last_run_timestamp_seconds", pg)] == expected_ts
    assert SECRET not in text and "runner-7" not in text
    assert [p.name for p in path.parent.iterdir()] == ["firedrill.prom"]  # no temp file left


def test_metrics_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.prom"):
        write_metrics(tmp_path / "firedrill.txt", [make_record()])
    with pytest.raises(ConfigError, match="finished_at"):
        build_registry([make_record(finished_at="yesterday")])
