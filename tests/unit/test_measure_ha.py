"""The HA manager's failover phases and their ground-truth checks, on synthetic timelines."""

from __future__ import annotations

import pytest

from firedrill.measure_ha import (
    check_detection,
    check_handover,
    check_no_promotion,
    detection_bounds,
    format_roles,
    max_primaries,
    measure_ha,
    parse_roles,
)
from firedrill.timeline import Event, EventKind

T0 = 1000.0


def ev(kind: EventKind, t: float, detail: str = "") -> Event:
    return Event(kind=kind, mono=T0 + t, wall=T0 + t, detail=detail)


def roles(t: float, leader: str | None, **nodes: str) -> Event:
    return ev(
        EventKind.HA_ROLES,
        t,
        format_roles(leader, leader != "?", {k.replace("_", "-"): v for k, v in nodes.items()}),
    )


def kill_timeline(*, lost: float = 19.4, elected: float = 19.6, promoted: float = 20.3) -> list[Event]:
    return [
        roles(-1.0, "pg-1", pg_1="primary@1", pg_2="replica@1", pg_3="replica@1"),
        ev(EventKind.FAULT_ISSUED, 0.0, "kill"),
        ev(EventKind.FAULT_RETURNED, 0.01),
        ev(EventKind.LEADER_LOST, lost, "pg-1"),
        ev(EventKind.LEADER_ELECTED, elected, "pg-2"),
        ev(EventKind.NEW_PRIMARY, promoted, "pg-2@2"),
    ]


def test_a_killed_leader_gives_four_phases_in_order() -> None:
    result = measure_ha(kill_timeline(), recovered_at=T0 + 20.5)
    assert [p.name for p in result.phases] == ["detection", "election", "promotion", "reconnect"]
    assert result.duration("detection") == pytest.approx(19.4)
    assert result.duration("election") == pytest.approx(0.2)
    assert result.duration("promotion") == pytest.approx(0.7)
    assert result.duration("reconnect") == pytest.approx(0.2)
    assert result.elected == "pg-2" and result.promoted == "pg-2@2"
    assert result.failover_seen and not result.problems
    # the phases tile the time from the fault to recovery
    assert sum(p.duration_s for p in result.phases) == pytest.approx(20.5)


def test_no_fault_is_an_error() -> None:
    with pytest.raises(ValueError, match="FAULT_ISSUED"):
        measure_ha([roles(0, "pg-1", pg_1="primary@1")], recovered_at=None)


def test_leader_key_never_expired_means_no_failover_and_no_phases() -> None:
    events = [roles(-1, "pg-1", pg_1="primary@1", pg_2="replica@1"), ev(EventKind.FAULT_ISSUED, 0.0)]
    result = measure_ha(events, recovered_at=T0 + 2.1)
    assert result.phases == () and not result.failover_seen and not result.problems
    ok, detail = check_detection(result.duration("detection"), ttl=20, loop_wait=1)
    assert not ok and "no leader key expiry" in detail


def test_no_outage_seen_still_reports_the_control_plane_phases_without_reconnect() -> None:
    result = measure_ha(kill_timeline(), recovered_at=None)
    assert [p.name for p in result.phases] == ["detection", "election", "promotion"]


def test_recovery_before_the_new_primary_has_no_reconnect_phase() -> None:
    result = measure_ha(kill_timeline(), recovered_at=T0 + 5.0)  # e.g. the old node came back
    assert "reconnect" not in [p.name for p in result.phases]


def test_promotion_before_detection_is_impossible_and_flagged() -> None:
    events = kill_timeline(lost=19.4, elected=19.6, promoted=3.0)
    result = measure_ha(events, recovered_at=T0 + 20.5)
    assert result.phases == ()
    assert any("promotion before detection" in p for p in result.problems)


def test_a_key_taken_before_it_was_seen_gone_is_flagged() -> None:
    events = [*kill_timeline(), ev(EventKind.LEADER_ELECTED, 5.0, "pg-3")]
    result = measure_ha(events, recovered_at=T0 + 21)
    assert any("before the old key was seen gone" in p for p in result.problems)


def test_a_new_primary_without_any_election_is_flagged() -> None:
    events = [
        roles(-1, "pg-1", pg_1="primary@1"),
        ev(EventKind.FAULT_ISSUED, 0),
        ev(EventKind.NEW_PRIMARY, 2, "pg-2@2"),
    ]
    assert measure_ha(events, recovered_at=None).problems


def test_the_key_holder_promoting_itself_again_needs_no_election() -> None:
    """After a DCS outage Patroni's demoted leader, still holding its key, promotes on a new timeline."""
    events = [
        *quorum_timeline(),
        roles(25.5, "pg-1", pg_1="replica@1"),
        ev(EventKind.NEW_PRIMARY, 26, "pg-1@2"),
    ]
    result = measure_ha(events, recovered_at=T0 + 26.2)
    assert not result.problems and result.failover_seen
    assert [p.name for p in result.phases] == ["reconnect"]


def test_a_key_holder_promoted_while_the_dcs_is_still_unreadable_needs_no_election() -> None:
    """As seen on the real HA staging: the demoted leader promotes itself a moment before the watcher
    can read the key again, and the key it then reads is still its own."""
    events = [
        *quorum_timeline(),
        ev(EventKind.NEW_PRIMARY, 26, "pg-1@2"),
        roles(26.0, "?", pg_1="primary@2"),
        roles(26.3, "pg-1", pg_1="primary@2"),
    ]
    assert not measure_ha(events, recovered_at=T0 + 26.1).problems


def test_a_promotion_while_the_dcs_is_unreadable_by_a_node_that_then_lacks_the_key_is_a_problem() -> None:
    events = [
        *quorum_timeline(),
        ev(EventKind.NEW_PRIMARY, 26, "pg-1@2"),
        roles(26.3, "pg-2", pg_1="primary@2"),
    ]
    [problem] = measure_ha(events, recovered_at=T0 + 26.1).problems
    assert "no node was seen taking the leader key" in problem


def test_a_key_change_between_two_polls_is_one_merged_phase() -> None:
    events = [e for e in kill_timeline() if e.kind is not EventKind.LEADER_LOST]
    result = measure_ha(events, recovered_at=T0 + 20.5)
    assert [p.name for p in result.phases] == ["detection + election", "promotion", "reconnect"]


def test_events_before_the_fault_do_not_count() -> None:
    events = [
        ev(EventKind.LEADER_LOST, -5, "pg-0"),
        ev(EventKind.LEADER_ELECTED, -4, "pg-1"),
        *kill_timeline(),
    ]
    result = measure_ha(events, recovered_at=T0 + 20.5)
    assert result.duration("detection") == pytest.approx(19.4)


def test_a_switchover_starts_with_the_handover_and_is_checked_against_its_request() -> None:
    events = [
        roles(-1, "pg-1", pg_1="primary@1", pg_2="replica@1"),
        ev(EventKind.FAULT_ISSUED, 0.0, "switchover"),
        ev(EventKind.LEADER_LOST, 0.9, "pg-1"),
        ev(EventKind.LEADER_ELECTED, 1.1, "pg-2"),
        ev(EventKind.NEW_PRIMARY, 1.6, "pg-2@2"),
        ev(EventKind.FAULT_RETURNED, 2.0),
    ]
    result = measure_ha(events, recovered_at=T0 + 1.8, planned=True)
    assert [p.name for p in result.phases] == ["handover", "election", "promotion", "reconnect"]
    ok, detail = check_handover(result, T0 + 2.0, loop_wait=1)
    assert ok, detail
    late = measure_ha(
        [*events[:2], ev(EventKind.LEADER_ELECTED, 9.0, "pg-2")], recovered_at=None, planned=True
    )
    assert not check_handover(late, T0 + 2.0, loop_wait=1)[0]
    assert not check_handover(measure_ha(events[:2], recovered_at=None, planned=True), None, loop_wait=1)[0]


@pytest.mark.parametrize(
    ("detection", "ok"),
    [(19.2, True), (18.1, True), (17.9, False), (21.9, True), (22.1, False), (3.0, False)],
)
def test_detection_must_lie_within_the_ttl_bounds(detection: float, ok: bool) -> None:
    assert detection_bounds(20, 1, 1.0) == (18.0, 22.0)
    assert check_detection(detection, ttl=20, loop_wait=1, margin_s=1.0)[0] is ok


def test_roles_round_trip_and_unknown_leader() -> None:
    snap = parse_roles(roles(0, "?", pg_1="primary@3", pg_2="unreachable"))
    assert snap.leader is None and not snap.dcs_ok
    assert snap.roles == {"pg-1": ("primary", 3), "pg-2": ("unreachable", None)}
    assert snap.primaries() == ["pg-1"]
    absent = parse_roles(roles(0, None, pg_1="replica/stopped@1"))
    assert absent.dcs_ok and absent.leader is None and absent.primaries() == []


def quorum_timeline(*during: Event) -> list[Event]:
    return [
        roles(-1, "pg-1", pg_1="primary@1", pg_2="replica@1", pg_3="replica@1"),
        ev(EventKind.FAULT_ISSUED, 0.0, "dcs-quorum-loss"),
        roles(4.0, "?", pg_1="replica/running@1", pg_2="replica@1", pg_3="replica@1"),
        *during,
        ev(EventKind.FAULT_CLEARED, 25.0),
    ]


def test_no_promotion_while_the_dcs_has_no_quorum() -> None:
    ok, detail = check_no_promotion(quorum_timeline(), T0, T0 + 25)
    assert ok, detail
    assert "timeline 1 unchanged" in detail


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (ev(EventKind.NEW_PRIMARY, 10, "pg-2@2"), "new primary pg-2@2"),
        (ev(EventKind.LEADER_ELECTED, 10, "pg-3"), "leader key taken by pg-3"),
        (roles(10, "?", pg_1="replica@1", pg_2="primary@2", pg_3="replica@1"), "pg-2 primary"),
        (roles(10, "?", pg_1="primary@1", pg_2="primary@1", pg_3="replica@1"), "two primaries"),
        (roles(10, "?", pg_1="replica@1", pg_2="replica@2", pg_3="replica@1"), "pg-2 on timeline 2"),
    ],
)
def test_any_promotion_in_the_window_is_named(bad: Event, words: str) -> None:
    ok, detail = check_no_promotion(quorum_timeline(bad), T0, T0 + 25)
    assert not ok and words in detail


def test_a_promotion_after_the_window_does_not_count() -> None:
    events = [*quorum_timeline(), ev(EventKind.NEW_PRIMARY, 30, "pg-1@2")]
    assert check_no_promotion(events, T0, T0 + 25)[0]


def test_no_snapshot_before_the_window_proves_nothing() -> None:
    assert not check_no_promotion([ev(EventKind.FAULT_ISSUED, 0)], T0, T0 + 1)[0]


def test_max_primaries_names_the_worst_moment() -> None:
    events = quorum_timeline(roles(12, "pg-2", pg_1="primary@1", pg_2="primary@2"))
    assert max_primaries(events, T0) == (2, "+12.000 s: pg-1, pg-2")
    assert max_primaries(events, T0 + 13) == (2, "+0.000 s: pg-1, pg-2")  # still in force at +13 s
    quiet = [roles(-1, "pg-1", pg_1="primary@1", pg_2="replica@1"), ev(EventKind.FAULT_ISSUED, 0)]
    assert max_primaries(quiet, T0) == (1, "+0.000 s: pg-1")  # nothing changed after the fault
