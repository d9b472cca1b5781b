"""Starting the PostgreSQL staging when something goes wrong at the start: a port taken between
`free_port()` and the server's bind is replaced, and any other failure names the server's own reason
and leaves no server behind."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

import firedrill.staging.postgres as pg_staging
from firedrill.errors import StagingError
from firedrill.staging.common import free_port
from firedrill.staging.postgres import PgStaging, PgStagingConfig
from tests.fixtures.processes import own_servers


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as sock:  # listening: PostgreSQL cannot bind it
        yield int(sock.getsockname()[1])


def test_a_port_taken_before_the_server_binds_it_is_replaced(
    taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed = iter([free_port(), taken_port])  # pg-a gets a free one, pg-b the taken one, then free
    monkeypatch.setattr(pg_staging, "free_port", lambda: next(handed, None) or free_port())
    with PgStaging() as staging:
        assert staging.standby.port != taken_port
        assert len(own_servers(f"-D {staging.workdir}/")) == 2  # both postmasters, seen below us
        staging.wait_steady(max_lag_s=1, timeout_s=10)
    assert not own_servers("firedrill-pg-")


def test_a_server_that_will_not_start_is_named_with_its_reason_and_leaves_nothing() -> None:
    bad = PgStagingConfig(extra_settings=(("no_such_setting", "1"),))
    with pytest.raises(StagingError) as caught:
        PgStaging(bad).start()
    message = str(caught.value)
    assert message.startswith("start of pg-a failed") and "FATAL:" in message, message
    assert "\n" not in message
    assert not own_servers("firedrill-pg-")
