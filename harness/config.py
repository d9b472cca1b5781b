"""Environment profiles: where drills run and with which objectives and probe settings.

`local` is built in (the embedded staging). Other profiles come from a TOML file (`firedrill.toml` in
the working directory, or `--config`), validated with pydantic so a bad value names itself in one line.
Secrets are never values here, only references (an environment variable or a secret id).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import ConfigError

DEFAULT_CONFIG = Path("firedrill.toml")


class ProbeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    rate_hz: float = Field(50.0, ge=0.1, le=1000)
    op_timeout_s: float = Field(0.5, ge=0.01, le=60)


class ObjectiveSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    rto_s: float = Field(900.0, gt=0)
    rpo_s: float = Field(300.0, ge=0)
    backup_max_age_s: float = Field(86400.0, gt=0)


class Profile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    kind: Literal["local", "aws"] = "local"
    probe: ProbeSettings = ProbeSettings()
    objectives: ObjectiveSettings = ObjectiveSettings()
    recovery_timeout_s: float = Field(120.0, gt=0, le=7200)
    sync_replication: bool = True


class ConfigFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    profiles: dict[str, dict[str, object]] = Field(default_factory=dict)


BUILTIN = {"local": Profile(name="local")}


def _first_error(exc: ValidationError, source: str) -> ConfigError:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return ConfigError(f"{source}: {where}: {err['msg']}")


def load_profiles(path: Path | None = None) -> dict[str, Profile]:
    profiles = dict(BUILTIN)
    file = path or DEFAULT_CONFIG
    if path is not None and not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    if not file.is_file():
        return profiles
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
    try:
        parsed = ConfigFile.model_validate(raw)
        for name, body in parsed.profiles.items():
            profiles[name] = Profile.model_validate({"name": name, **body})
    except ValidationError as exc:
        raise _first_error(exc, str(file)) from exc
    return profiles


def get_profile(name: str, path: Path | None = None) -> Profile:
    profiles = load_profiles(path)
    if name not in profiles:
        raise ConfigError(f"unknown environment '{name}' (known: {', '.join(sorted(profiles))})")
    return profiles[name]
