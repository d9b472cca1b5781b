"""A watcher of an HA manager (Patroni) during a drill: it polls the leader key and every node's own
REST view at a high rate and records what changed as timeline events, on the monotonic clock.

One thread per source (the leader key, each node's GET /patroni), so a frozen node that times out
does not slow the others. Events (see `firedrill.timeline`): HA_ROLES on any change of the leader or
of a node's role@timeline; LEADER_LOST when the key is seen gone; LEADER_ELECTED when a node is seen
holding it after it was gone or held by another; NEW_PRIMARY when a node other than the pre-fault
primary (or the same one on a new timeline) reports running as primary. `firedrill.measure_ha`
turns them into phases.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from firedrill.errors import HarnessError
from firedrill.measure_ha import format_roles
from firedrill.staging.patroni_api import PatroniApi
from firedrill.timeline import EventKind, Timeline

# Returns the leader key holder, None when the key is absent; raises HarnessError when the DCS
# (or whatever tells the leader) cannot be read.
LeaderReader = Callable[[], str | None]

UNKNOWN = "?"


@dataclass
class _State:
    leader: str | None = UNKNOWN  # UNKNOWN until first read
    dcs_ok: bool = False
    last_holder: str | None = None  # the last node seen holding the key


class HaWatcher:
    def __init__(
        self,
        timeline: Timeline,
        nodes: list[PatroniApi],
        leader: LeaderReader,
        *,
        interval_s: float = 0.05,
    ) -> None:
        self._timeline = timeline
        self._nodes = nodes
        self._read_leader = leader
        self._interval = interval_s
        self._lock = threading.Lock()
        self._state = _State()
        self._roles: dict[str, str] = {n.name: UNKNOWN for n in nodes}
        self._primary: dict[str, int | None] = {}  # node -> timeline of each primary reported
        self._baseline: tuple[str, int | None] | None = None
        self._last_detail = ""
        self._live = False  # events are recorded from the baseline snapshot on
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, *, settle_s: float = 2.0) -> HaWatcher:
        """Start polling; returns once every source answered once (or `settle_s` passed), so the
        first HA_ROLES snapshot is the pre-fault baseline."""
        self._threads = [threading.Thread(target=self._leader_loop, name="ha-watch-leader", daemon=True)]
        self._threads += [
            threading.Thread(target=self._node_loop, args=(n,), name=f"ha-watch-{n.name}", daemon=True)
            for n in self._nodes
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._state.leader != UNKNOWN and UNKNOWN not in self._roles.values():
                    break
            time.sleep(self._interval)
        with self._lock:
            self._baseline = next(
                (
                    (n, self._primary[n])
                    for n in sorted(self._primary)
                    if self._roles[n].startswith("primary@")
                ),
                None,
            )
            self._live = True
            self._emit_roles()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self._threads = []

    # ---- pollers -------------------------------------------------------------------------------
    def _leader_loop(self) -> None:
        while not self._stop.is_set():
            try:
                holder: str | None = self._read_leader()
                ok = True
            except HarnessError:
                holder, ok = UNKNOWN, False
            with self._lock:
                self._on_leader(holder, ok)
            self._stop.wait(self._interval)

    def _node_loop(self, api: PatroniApi) -> None:
        while not self._stop.is_set():
            try:
                st = api.status()
                role = (
                    "primary"
                    if st.is_primary
                    else st.role
                    if st.state == "running"
                    else f"{st.role}/{st.state}"
                )
                value = f"{role}@{st.timeline if st.timeline is not None else '?'}"
                primary_tl = st.timeline if st.is_primary else None
                is_primary = st.is_primary
            except HarnessError:
                value, primary_tl, is_primary = "unreachable", None, False
            with self._lock:
                self._on_node(api.name, value, is_primary, primary_tl)
            self._stop.wait(self._interval)

    # ---- state changes (under the lock) ----------------------------------------------------------
    def _on_leader(self, holder: str | None, ok: bool) -> None:
        st = self._state
        if holder == st.leader and ok == st.dcs_ok:
            return
        previous = st.leader
        st.leader, st.dcs_ok = holder, ok
        if self._live and ok and holder is None and previous not in (None, UNKNOWN):
            self._timeline.mark(EventKind.LEADER_LOST, f"leader key of {previous} gone")
        if ok and holder is not None and holder != UNKNOWN:
            if self._live and st.last_holder is not None and (holder != st.last_holder or previous is None):
                self._timeline.mark(EventKind.LEADER_ELECTED, holder)
            st.last_holder = holder
        self._emit_roles()

    def _on_node(self, name: str, value: str, is_primary: bool, timeline: int | None) -> None:
        if self._roles.get(name) == value:
            return
        self._roles[name] = value
        if is_primary:
            fresh = self._primary.get(name, -1) != timeline
            self._primary[name] = timeline
            if fresh and self._live and self._baseline is not None and (name, timeline) != self._baseline:
                self._timeline.mark(EventKind.NEW_PRIMARY, f"{name}@{timeline}")
        self._emit_roles()

    def _emit_roles(self) -> None:
        if not self._live:
            return
        leader = self._state.leader
        detail = format_roles(None if leader == UNKNOWN else leader, self._state.dcs_ok, dict(self._roles))
        if detail != self._last_detail:
            self._last_detail = detail
            self._timeline.mark(EventKind.HA_ROLES, detail)
