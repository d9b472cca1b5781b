"""pytest plugin for running features/ against moto + Stubber (used by test_features_aws.py).

Loaded into a child `pytest features/ --env aws-test` with `-p tests.aws.feature_plugin`. It swaps the
("postgres", "aws") opener for one that opens the real RdsFailoverTarget (guardrails against moto),
with the failover moto cannot do scripted by Stubber and played on a local PostgreSQL primary + standby
behind a loopback "endpoint". Everything else (the feature file, the steps, the drill, the evidence)
is the real thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from botocore.stub import Stubber

from firedrill.aws.session import AwsSession, aws_settings
from firedrill.config import Profile
from firedrill.staging.postgres import PgStaging
from firedrill.targets import factory
from firedrill.targets.aws_rds import connect_rds
from firedrill.targets.base import FailoverTarget
from tests.aws.resources import create_instance, db_instance, rds_event
from tests.aws.scripting import CallHooks, RdsInstanceScript
from tests.aws.tcp_proxy import TcpProxy

A, B = "eu-west-1a", "eu-west-1b"


@contextmanager
def scripted_rds(profile: Profile) -> Iterator[FailoverTarget]:
    settings = aws_settings(profile)
    assert settings.rds is not None and settings.rds.db_instance_id
    iid = settings.rds.db_instance_id
    with PgStaging() as pg, TcpProxy(("127.0.0.1", pg.primary.port)) as proxy:
        rds_settings = settings.rds.model_copy(update={"endpoint": proxy.endpoint})
        session = AwsSession(settings.model_copy(update={"rds": rds_settings}))
        create_instance(session.rds(), iid)
        target = connect_rds(session)
        stubber = Stubber(session.rds())
        now = datetime.now(UTC)
        script = RdsInstanceScript(stubber, db_instance, iid)
        script.steady(A, B, 4).reboot(A, B)
        started = rds_event(iid, "Multi-AZ instance failover started.", now)
        for _ in range(2):
            script.describe("rebooting", A, B).events(started)
        script.describe("available", B, A).events(
            started, rds_event(iid, "Multi-AZ instance failover completed", now)
        )
        script.steady(B, A, 3)
        hooks = CallHooks(session.rds())
        primary, standby = pg.primary, pg.standby

        def promote() -> None:
            pg.promote(standby, timeout_s=10)
            proxy.point_to(("127.0.0.1", standby.port))

        hooks.on_call("RebootDBInstance", lambda: pg.kill(primary))
        hooks.on_call("DescribeDBInstances", promote, nth=7)
        with stubber:
            yield target
            stubber.assert_no_pending_responses()


def pytest_configure(config: pytest.Config) -> None:
    factory.register("postgres", "aws", scripted_rds)
