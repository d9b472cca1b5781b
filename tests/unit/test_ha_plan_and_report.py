"""`firedrill plan` on the local HA staging says what that staging starts and does (the adapter's own
plan lines, not the failover drill's generic text), and the Markdown report carries the Patroni
settings box the HTML report has."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from firedrill.config import Profile
from firedrill.drills.plan import make_plan
from firedrill.evidence import EvidenceRecord
from firedrill.report.run_report import render_html, render_markdown
from firedrill.targets import factory
from firedrill.targets.base import Change
from tests.fixtures.evidence_factory import make_record

HA_SETTINGS = {
    "ttl": "20",
    "loop_wait": "1",
    "retry_timeout": "3",
    "maximum_lag_on_failover": "1048576",
    "synchronous_mode": "true",
    "failsafe_mode": "false",
}


def test_the_local_ha_plan_lists_what_that_staging_starts_and_does() -> None:
    text = make_plan("failover", Profile(name="local-ha", kind="local-ha")).render()
    assert "a PostgreSQL primary and a streaming standby" not in text  # the drill's generic text
    assert "ok  Patroni settings: ttl 20 s, loop_wait 1 s, retry_timeout 3 s" in text
    assert "[local] start 3 etcd members: etcd 3.4" in text
    assert "[local] start 3 PostgreSQL nodes, each managed by Patroni" in text
    assert "[local] start HAProxy: one port forwarded to the node answering 200 on Patroni's REST" in text
    for fault in ("kill", "freeze", "network-cut", "dcs-quorum-loss"):
        assert f"[local] fault {fault}: " in text
    assert "[rest] fault switchover: POST /switchover" in text
    assert "[local] no promotion by firedrill: Patroni detects the loss" in text
    assert text.splitlines()[-1] == "nothing was changed (plan only)"


def test_the_local_ha_plan_follows_the_profile() -> None:
    ha = {"nodes": 5, "etcd_members": 5, "client": "multi-host"}
    profile = Profile.model_validate({"name": "ha5", "kind": "local-ha", "local_ha": ha})
    text = make_plan("failover", profile).render()
    assert "start 5 etcd members" in text and "start 5 PostgreSQL nodes" in text
    assert "libpq multi-host conninfo, target_session_attrs=read-write" in text


def test_other_kinds_keep_their_plans() -> None:
    local = make_plan("failover", Profile(name="local")).render()
    assert "[local] start a PostgreSQL primary and a streaming standby" in local
    assert "Patroni" not in local


@pytest.fixture
def toy_planner() -> Iterator[None]:
    def plan(profile: Profile) -> tuple[list[str], list[Change]]:
        return [f"toy guardrail for {profile.name}"], [Change("local", "start", "one toy box")]

    saved = dict(factory.PLANNERS)
    factory.register_planner("redis", "local-ha", plan)
    try:
        yield
    finally:
        factory.PLANNERS.clear()
        factory.PLANNERS.update(saved)


def test_an_adapter_registers_its_own_plan_lines(toy_planner: None) -> None:
    text = make_plan("cache-failover", Profile(name="local-ha", kind="local-ha")).render()
    assert "ok  toy guardrail for local-ha" in text and "1. [local] start one toy box" in text


def _ha_record() -> EvidenceRecord:
    record = make_record()
    env = record.environment.model_copy(update={"settings": {**record.environment.settings, **HA_SETTINGS}})
    m = record.measurements.model_copy(
        update={"extra": {**record.measurements.extra, "ha_detection_s": 19.3125}}
    )
    return record.model_copy(update={"environment": env, "measurements": m})


def test_the_markdown_report_shows_the_patroni_settings_beside_the_phases() -> None:
    md = render_markdown(_ha_record())
    assert "### HA manager settings (Patroni)" in md
    assert "| `ttl` | 20 s |" in md and "| `loop_wait` | 1 s |" in md
    assert "| `maximum_lag_on_failover` | 1048576 bytes |" in md
    assert "| `synchronous_mode` | true |" in md and "| `failsafe_mode` | false |" in md
    assert "| detection vs leader TTL | measured 19.312 s; expected 18.0\u201322.0 s" in md  # an en dash
    assert md.index("## Phases") < md.index("### HA manager settings") < md.index("## Outage summary")
    html = render_html(_ha_record())
    assert "HA manager settings (Patroni)" in html  # the HTML box, for comparison


def test_the_markdown_report_has_no_patroni_box_without_those_settings() -> None:
    assert "HA manager settings" not in render_markdown(make_record())


def test_a_drill_without_a_leader_key_expiry_says_so() -> None:
    record = _ha_record()
    m = record.measurements.model_copy(update={"extra": {}})
    md = render_markdown(record.model_copy(update={"measurements": m}))
    assert "| detection vs leader TTL | no leader key expiry in this drill" in md
