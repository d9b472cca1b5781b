"""How the suite is spread over pytest-xdist workers (`make test` runs it with `-n 2`).

Each test file is one unit of work, so a module's shared staging is started once, on one worker.
The files that judge the whole machine (every namespace and link, every HA staging process) or that
sweep what killed runs left (`firedrill staging down`) are one unit, `machine`: they run one after
another, never beside each other's killed children, and first, since that unit is the longest.
Elsewhere a check on leftover processes looks only at the checking process's own descendants
(`tests.fixtures.processes`), so another worker's stagings are never taken for leftovers.

The units are made by a scheduler of our own (xdist's `loadgroup` marks do not reach pytest 9.2's
node ids).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

MACHINE_WIDE = (
    "tests/integration/test_cli_staging.py",
    "tests/integration/test_local_ha.py",
    "tests/integration/test_patroni_profile.py",
    "tests/integration/test_zones.py",
)


def work_unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "machine" if path in MACHINE_WIDE else path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: work_unit(item.nodeid) != "machine")  # stable: the rest keep their order


if importlib.util.find_spec("xdist") is not None:
    from xdist.scheduler import LoadScopeScheduling

    class _ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling:
        return _ByWorkUnit(config, log)
