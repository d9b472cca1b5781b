"""The zone drill's profile sections: defaults, and one line naming a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from firedrill.config import load_profiles
from firedrill.config_zones import ZoneSettings, iso_duration_s
from firedrill.errors import ConfigError
from firedrill.staging.zones import ZoneFabric


def test_the_default_layout_spreads_everything_over_three_zones_with_the_clients_apart() -> None:
    z = ZoneSettings()
    assert z.zones == ("a", "b", "c") and z.clients == "client"
    assert z.postgres == ("a", "b") and z.redis == ("a", "b", "c") and z.sentinels == ("a", "b", "c")
    assert z.all_zones() == ["a", "b", "c", "client"]
    assert ZoneSettings(clients="a").all_zones() == ["a", "b", "c"]  # clients sharing zone a


def _profile(tmp_path: Path, body: str) -> None:
    cfg = tmp_path / "firedrill.toml"
    cfg.write_text("[profiles.z]\n" + body, encoding="utf-8")
    load_profiles(cfg)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('zones.postgres = ["a", "d"]', "postgres placed in unknown zone 'd'"),
        ('zones.postgres = ["b", "b"]', "primary and standby must be in different zones"),
        ('zones.subnet = "127.0.0.0/24"', "must be a private or reserved range"),
        ('zones.subnet = "8.8.8.0/24"', "must be a private or reserved range"),
        ('zones.subnet = "10.1.2.0/28"', "too small"),
        ('zones.zones = ["a", "ctl"]', "reserved"),
        ('zones.clients = "Client zone"', "zones.clients"),
    ],
)
def test_a_bad_zone_layout_is_one_line_naming_it(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _profile(tmp_path, body)
    text = str(err.value)
    assert "\n" not in text and message in text, text


def test_fis_settings_live_in_the_aws_section(tmp_path: Path) -> None:
    body = (
        'kind = "aws"\n[profiles.z.aws]\nregion = "eu-west-1"\naccount_ids = ["123456789012"]\n'
        '[profiles.z.aws.fis]\navailability_zone = "eu-west-1a"\n'
        'role_arn = "arn:aws:iam::123456789012:role/firedrill-fis-staging"\n'
        'stop_alarm_arns = ["arn:aws:cloudwatch:eu-west-1:123456789012:alarm:errors"]\n'
    )
    cfg = tmp_path / "firedrill.toml"
    cfg.write_text("[profiles.z]\n" + body, encoding="utf-8")
    fis = load_profiles(cfg)["z"].aws.fis  # type: ignore[union-attr]
    assert fis is not None and fis.duration == "PT5M" and fis.rds_failover and fis.elasticache_power
    cfg.write_text("[profiles.z]\n" + body.replace("firedrill-fis-staging", "Admin"), encoding="utf-8")
    with pytest.raises(ConfigError, match="firedrill-fis-"):
        load_profiles(cfg)


def test_iso_durations() -> None:
    assert (
        iso_duration_s("PT5M") == 300 and iso_duration_s("PT1H30M") == 5400 and iso_duration_s("PT45S") == 45
    )
    with pytest.raises(ValueError):
        iso_duration_s("5 minutes")


def test_zone_names_and_addresses_come_from_the_owner_and_the_subnet() -> None:
    fabric = ZoneFabric(["a", "b", "client"], owner=4242)
    link = fabric.link("b")
    assert link.namespace == "firedrill-4242-b" and link.veth == "fd4242v2" and link.peer == "fd4242z2"
    assert link.address == "198.18.0.12" and fabric.address("ctl") == "198.18.0.14"
    assert fabric.fabric_namespace == "firedrill-4242-fabric" and fabric.bridge == "fd4242br0"
    assert all(len(name) <= 15 for lk in fabric.links() for name in (lk.veth, lk.peer))  # IFNAMSIZ
    with pytest.raises(ConfigError, match="unknown zone 'x'"):
        fabric.link("x")
    with pytest.raises(ConfigError, match="control zone is never cut"):
        fabric.set_links(["ctl"], up=False)
