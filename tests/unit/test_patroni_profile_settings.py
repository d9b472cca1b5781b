"""HA profiles without any server: local-ha and patroni settings, the guardrails of an existing
Patroni cluster, and which scenarios a profile kind runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from firedrill.config import get_profile
from firedrill.config_ha import LocalHaSettings, PasswordRef, PatroniClusterSettings, looks_like_production
from firedrill.errors import ConfigError, GuardrailError
from firedrill.plugin import ENV_NEEDS, ENV_TAGS
from firedrill.staging.patroni_api import ClusterView, Member, parse_cluster
from firedrill.targets.patroni_cluster import PatroniClusterTarget, endpoint_from_dsn, read_password

BASE = {"rest_urls": ["http://127.0.0.1:8008"], "dsn": "host=127.0.0.1 port=5000 dbname=app user=drill"}


def _toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "firedrill.toml"
    path.write_text(body)
    return path


def test_local_ha_is_a_builtin_profile_with_patronis_minimum_timers() -> None:
    profile = get_profile("local-ha")
    assert profile.kind == "local-ha"
    assert (profile.local_ha.ttl, profile.local_ha.loop_wait, profile.local_ha.retry_timeout) == (20, 1, 3)


def test_a_ttl_patroni_would_silently_raise_is_refused_in_one_line(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[profiles.ha]\nkind = "local-ha"\n[profiles.ha.local_ha]\nttl = 10\n')
    with pytest.raises(
        ConfigError, match=r"firedrill.toml: local_ha.ttl: Input should be greater than or equal to 20"
    ):
        get_profile("ha", path)
    with pytest.raises(ValueError, match=r"loop_wait \+ 2 \* retry_timeout <= ttl"):
        LocalHaSettings(ttl=20, loop_wait=10, retry_timeout=6)


def test_a_patroni_profile_needs_its_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kind = 'patroni' needs a"):
        get_profile("p", _toml(tmp_path, '[profiles.p]\nkind = "patroni"\n'))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"dsn": "host=db password=hunter2"}, "must not hold a password"),
        ({"dsn": "postgresql://drill:hunter2@db/app"}, "must not hold a password"),
        ({"allowed_scopes": ["orders-prod"]}, "a production scope cannot be allowed"),
        ({"allowed_scopes": []}, "at least 1"),
        ({"rest_urls": ["db1:8008"]}, "must start with http"),
        ({"kill_command": ["ssh", "{node}", "kill"]}, "needs a start_command"),
        ({"freeze_command": ["x"]}, "go together"),
    ],
)
def test_bad_patroni_settings_name_themselves(change: dict[str, object], words: str) -> None:
    body = {**BASE, "allowed_scopes": ["orders-staging"], **change}
    with pytest.raises(ValueError, match=words) as info:
        PatroniClusterSettings.model_validate(body)
    assert "hunter2" not in str(info.value).split("input_value")[0]


def test_the_password_comes_from_its_reference_and_a_missing_one_is_named_not_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_PW", "s3cret")
    assert read_password(PasswordRef(env="DB_PW")) == "s3cret"
    (tmp_path / "pw").write_text("from-file\n")
    assert read_password(PasswordRef(file=tmp_path / "pw")) == "from-file"
    monkeypatch.delenv("DB_PW")
    with pytest.raises(ConfigError, match="DB_PW is not set"):
        read_password(PasswordRef(env="DB_PW"))
    with pytest.raises(ValueError, match="exactly one"):
        PasswordRef(env="A", file=tmp_path / "pw")
    endpoint = endpoint_from_dsn("host=a,b port=5432,5433 dbname=app user=u", "s3cret")
    assert endpoint.hosts == (("a", 5432), ("b", 5433)) and "s3cret" not in endpoint.conninfo()


def _member(name: str, role: str = "replica", **tags: str) -> Member:
    return Member(name, role, "running", "127.0.0.1", 5000, "http://127.0.0.1:8008/patroni", 1, 0, tags)


def _target(view: ClusterView, scopes: tuple[str, ...] = ("orders-staging",)) -> PatroniClusterTarget:
    settings = PatroniClusterSettings.model_validate({**BASE, "allowed_scopes": list(scopes)})
    target = PatroniClusterTarget(settings)
    target.cluster = lambda: view  # type: ignore[method-assign]
    return target


def test_guardrails_refuse_a_scope_not_allowed_or_one_that_says_production() -> None:
    ok = ClusterView("orders-staging", (_member("a", "leader"), _member("b")))
    assert "allowed_scopes" in _target(ok).guard()[0]
    with pytest.raises(GuardrailError, match="not in allowed_scopes"):
        _target(ClusterView("billing-staging", ok.members)).guard()
    with pytest.raises(GuardrailError, match="its scope says production"):
        _target(ClusterView("orders-prod", ok.members), scopes=("orders-staging",)).guard()
    tagged = ClusterView("orders-staging", (_member("a", "leader", environment="production"),))
    with pytest.raises(GuardrailError, match="member a is tagged environment=production"):
        _target(tagged).guard()


def test_production_words_are_whole_words() -> None:
    assert looks_like_production("orders-prod") and looks_like_production("LIVE_db")
    assert not looks_like_production("product-catalogue-staging") and not looks_like_production("delivery")


def test_cluster_view_parses_patronis_answer() -> None:
    view = parse_cluster(
        {
            "scope": "s",
            "members": [
                {"name": "a", "role": "leader", "state": "running", "timeline": 3, "host": "h", "port": 1},
                {"name": "b", "role": "sync_standby", "state": "streaming", "lag": 0, "tags": {"x": 1}},
            ],
        }
    )
    assert view.leader is not None and view.leader.name == "a" and view.leader.timeline == 3
    assert [m.name for m in view.replicas()] == ["b"] and view.members[1].tags == {"x": "1"}


def test_every_profile_kind_has_an_environment_tag() -> None:
    assert ENV_TAGS == {
        "local": "local",
        "aws": "aws",
        "local-ha": "local_ha",
        "patroni": "patroni",
        "sentinel": "sentinel",
    }
    assert set(ENV_TAGS.values()) == set(ENV_NEEDS)
