"""Environment profiles: where drills run and with which objectives and probe settings.

`local` is built in (the embedded staging). Other profiles come from a TOML file (`firedrill.toml` in
the working directory, or `--config`), validated with pydantic so a bad value names itself in one line.
Secrets are never values here, only references (an environment variable or a secret id).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from firedrill.config_ha import LocalHaSettings, PatroniClusterSettings
from firedrill.config_knobs import LoadSettings, RedisKnobs, Replication, ServiceSettings, SyncCommit
from firedrill.config_sentinel import SentinelDeploymentSettings
from firedrill.config_zones import FisSettings, ZoneSettings
from firedrill.errors import ConfigError

DEFAULT_CONFIG = Path("firedrill.toml")

_active_config: Path | None = None  # the file the profiles were last loaded from (active_config_path)


class ProbeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    rate_hz: float = Field(50.0, ge=0.1, le=1000)
    op_timeout_s: float = Field(0.5, ge=0.01, le=60)


class ObjectiveSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    rto_s: float = Field(900.0, gt=0)
    rpo_s: float = Field(300.0, ge=0)
    backup_max_age_s: float = Field(86400.0, gt=0)


# ---- AWS (kind = "aws") -------------------------------------------------------------------------
AccountId = Annotated[str, StringConstraints(pattern=r"^[0-9]{12}$")]
PRODUCTION_VALUES = frozenset({"prod", "production", "live", "prd"})


class SecretRef(BaseModel):
    """Where a password comes from: an environment variable or an AWS Secrets Manager secret. Never
    the value itself. A Secrets Manager secret holding JSON (as RDS-managed secrets do) is read at
    `json_key`; a plain-string secret is used whole."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    env: str | None = None
    secret_id: str | None = None
    json_key: str = "password"

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.secret_id is None):
            raise ValueError("give exactly one of env = 'VAR' or secret_id = '...'")
        return self

    def reference(self) -> str:
        """A printable, secret-free name of the reference (for logs and evidence)."""
        return f"env:{self.env}" if self.env else f"secretsmanager:{self.secret_id}#{self.json_key}"


class RdsRestoreSettings(BaseModel):
    """The temporary instance a point-in-time restore drill creates (and always deletes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    instance_class: str | None = None  # default: the source instance's class
    subnet_group: str | None = None  # default: the source's
    security_group_ids: tuple[str, ...] = ()  # default: the source's
    endpoint: str | None = None  # "host[:port]" to reach the restored instance (tunnel, tests)
    keep_hours: float = Field(6.0, gt=0, le=168)  # expiry tag: `firedrill aws cleanup` deletes it after
    required_retention_days: int = Field(30, ge=1, le=35)  # the platform's promise: 30 days of PITR
    archive_timeout_s: float = Field(900.0, gt=0, le=3600)  # wait for LatestRestorableTime to pass "now"


class RdsSettings(BaseModel):
    """A Multi-AZ DB instance (`db_instance_id`) or an Aurora cluster (`db_cluster_id`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    db_instance_id: str | None = None
    db_cluster_id: str | None = None
    endpoint: str | None = None  # "host[:port]"; default: the endpoint RDS reports (writer for Aurora)
    dbname: str
    user: str
    password: SecretRef | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "require"
    restore: RdsRestoreSettings = RdsRestoreSettings()

    @model_validator(mode="after")
    def _one_resource(self) -> RdsSettings:
        if (self.db_instance_id is None) == (self.db_cluster_id is None):
            raise ValueError("give exactly one of db_instance_id (Multi-AZ) or db_cluster_id (Aurora)")
        return self


class ElastiCacheSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    replication_group_id: str
    node_group_id: str = "0001"
    endpoint: str | None = None  # "host[:port]"; default: the node group's primary endpoint
    tls: bool = True
    username: str | None = None  # Redis ACL user, when the group uses RBAC
    auth_token: SecretRef | None = None


S3_RETENTION_DAYS = 30  # the platform's promise: noncurrent versions of backups kept 30 days


class S3Settings(BaseModel):
    """A versioned backup bucket (the S3 restore drill). The drill writes only under
    `<prefix>/firedrill-drill/<run id>/` and deletes every version there afterwards."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = ""  # where the backups live; the drill's own prefix goes under it
    retention_days: int = Field(S3_RETENTION_DAYS, ge=1, le=3650)  # noncurrent versions kept this long
    replication: bool = False  # true: replication must be configured and a probe object not FAILED

    @field_validator("prefix")
    @classmethod
    def _plain_prefix(cls, value: str) -> str:
        if ".." in value.split("/"):
            raise ValueError("a prefix cannot contain '..'")
        return value.strip("/")


class NonProdTag(BaseModel):
    """Every resource firedrill touches must carry `key` with one of `allowed` as its value."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    key: str = "environment"
    allowed: tuple[str, ...] = Field(("staging",), min_length=1)

    @field_validator("allowed")
    @classmethod
    def _not_production(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if v.strip().lower() in PRODUCTION_VALUES]
        if bad:
            raise ValueError(f"a production value cannot be allowed: {', '.join(bad)}")
        return value


class AwsSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    region: str
    account_ids: tuple[AccountId, ...] = Field(min_length=1)
    nonprod_tag: NonProdTag = NonProdTag()
    endpoint_url: str | None = None  # an AWS-compatible endpoint (tests: moto); default: AWS itself
    max_retries: int = Field(5, ge=0, le=20)  # botocore "standard" retry mode
    poll_delay_s: float = Field(10.0, ge=0.01, le=300)  # between status polls of every wait
    failover_timeout_s: float = Field(900.0, gt=0, le=7200)
    delete_timeout_s: float = Field(1800.0, gt=0, le=6 * 3600)
    lease_ttl_s: float = Field(300.0, ge=1, le=3600)  # one drill per resource: the lease tag's expiry
    rds: RdsSettings | None = None
    elasticache: ElastiCacheSettings | None = None
    fis: FisSettings | None = None  # the zone outage drill's AWS FIS experiment
    s3: S3Settings | None = None


class Profile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    kind: Literal["local", "aws", "local-ha", "patroni", "sentinel"] = "local"
    probe: ProbeSettings = ProbeSettings()
    objectives: ObjectiveSettings = ObjectiveSettings()
    recovery_timeout_s: float = Field(120.0, gt=0, le=7200)
    sync_replication: bool = True  # kept for old profiles: replication = "sync" (true) or "async"
    replication: Replication | None = None  # sync, async or quorum; unset: from sync_replication
    synchronous_commit: SyncCommit = "on"
    redis: RedisKnobs = RedisKnobs()
    load: LoadSettings | None = None  # "Given the profile's background load"
    service: ServiceSettings | None = None  # the service probe's application endpoint
    aws: AwsSettings | None = Field(None, validate_default=True)
    local_ha: LocalHaSettings = LocalHaSettings()  # kind = "local-ha": the Patroni staging's settings
    patroni: PatroniClusterSettings | None = Field(None, validate_default=True)  # kind = "patroni"
    sentinel: SentinelDeploymentSettings | None = Field(None, validate_default=True)  # kind = "sentinel"
    zones: ZoneSettings = ZoneSettings()  # the zone outage drill: which zone holds what, locally

    @model_validator(mode="after")
    def _one_replication(self) -> Profile:
        if self.replication is not None and "sync_replication" in self.model_fields_set:
            implied = "sync" if self.sync_replication else "async"
            if implied != self.replication:
                raise ValueError(
                    f"sync_replication = {str(self.sync_replication).lower()} contradicts "
                    f"replication = '{self.replication}' (give replication alone)"
                )
        return self

    def replication_mode(self) -> Replication:
        """sync, async or quorum: `replication`, else what `sync_replication` says."""
        return self.replication or ("sync" if self.sync_replication else "async")

    @field_validator("aws")
    @classmethod
    def _aws_needs_section(cls, value: AwsSettings | None, info: ValidationInfo) -> AwsSettings | None:
        if info.data.get("kind") == "aws" and value is None:
            raise ValueError("kind = 'aws' needs an [profiles.<name>.aws] section")
        return value

    @field_validator("patroni")
    @classmethod
    def _patroni_needs_section(
        cls, value: PatroniClusterSettings | None, info: ValidationInfo
    ) -> PatroniClusterSettings | None:
        if info.data.get("kind") == "patroni" and value is None:
            raise ValueError("kind = 'patroni' needs a [profiles.<name>.patroni] section")
        return value

    @field_validator("sentinel")
    @classmethod
    def _sentinel_needs_section(
        cls, value: SentinelDeploymentSettings | None, info: ValidationInfo
    ) -> SentinelDeploymentSettings | None:
        if info.data.get("kind") == "sentinel" and value is None:
            raise ValueError("kind = 'sentinel' needs a [profiles.<name>.sentinel] section")
        return value


class LedgerSettings(BaseModel):
    """`[ledger]`: where evidence is chained and how it is signed. Keys are references, never values."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    enabled: bool = True
    dir: Path | None = None  # default: reports/ledger (next to the default reports/out)
    signing_key_env: str = "FIREDRILL_SIGNING_KEY"  # variable holding the Ed25519 private key
    signing_key_file: Path | None = None  # PKCS#8 PEM, used when the variable is not set
    public_key_file: Path | None = None  # for verify and the period report


class NotifySettings(BaseModel):
    """`[notify]`: Slack-compatible webhook on a failed drill or a breached objective."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    webhook_url_env: str = Field(min_length=1)  # variable holding the webhook URL (a credential)
    timeout_s: float = Field(10.0, gt=0, le=120)
    notify_on: Literal["failure", "always"] = "failure"
    secret_envs: list[str] = Field(default_factory=list)  # variables whose values must never be sent


class MetricsSettings(BaseModel):
    """`[metrics]`: Prometheus textfile (node exporter textfile collector) updated after each run."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    textfile: Path


class ArchiveSettings(BaseModel):
    """`[archive]`: S3 Object Lock (compliance mode) copy of the ledger, by `firedrill ledger archive`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    bucket: str = Field(min_length=3)
    prefix: str = "firedrill-ledger"
    retention_days: int = Field(365, ge=1)
    region: str | None = None


class ConfigFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    profiles: dict[str, dict[str, object]] = Field(default_factory=dict)
    ledger: LedgerSettings = LedgerSettings()
    # Validated by firedrill.schedule.config.ScheduleConfig when a schedule command needs it (keeps this
    # module free of APScheduler); `job_store_env` may name a variable holding a PostgreSQL URL.
    schedule: dict[str, object] | None = None
    notify: NotifySettings | None = None
    metrics: MetricsSettings | None = None
    archive: ArchiveSettings | None = None


class Settings(BaseModel):
    """The sections of the config file other than the profiles; relative paths already resolved
    against the config file's directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    source: Path | None = None  # the config file, None when there is none
    ledger: LedgerSettings = LedgerSettings()
    schedule: dict[str, object] | None = None
    notify: NotifySettings | None = None
    metrics: MetricsSettings | None = None
    archive: ArchiveSettings | None = None


BUILTIN = {"local": Profile(name="local"), "local-ha": Profile(name="local-ha", kind="local-ha")}


def _first_error(exc: ValidationError, source: str) -> ConfigError:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return ConfigError(f"{source}: {where}: {err['msg']}")


def _read_config(path: Path | None) -> tuple[ConfigFile, Path | None]:
    file = path or DEFAULT_CONFIG
    if path is not None and not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    if not file.is_file():
        return ConfigFile(), None
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
    try:
        return ConfigFile.model_validate(raw), file.resolve()
    except ValidationError as exc:
        raise _first_error(exc, str(file)) from exc


def load_profiles(path: Path | None = None) -> dict[str, Profile]:
    global _active_config
    profiles = dict(BUILTIN)
    parsed, source = _read_config(path)
    _active_config = source
    if source is None:
        return profiles
    try:
        for name, body in parsed.profiles.items():
            profiles[name] = Profile.model_validate({"name": name, **body})
    except ValidationError as exc:
        raise _first_error(exc, str(path or DEFAULT_CONFIG)) from exc
    return profiles


def active_config_path() -> Path | None:
    """The config file the profiles of this process came from (`--config`/`--firedrill-config` or
    ./firedrill.toml), so the after-run hook reads its `[ledger]`/`[notify]`/`[metrics]` there too."""
    return _active_config


def load_settings(path: Path | None = None) -> Settings:
    """The `[ledger]`, `[schedule]`, `[notify]`, `[metrics]` and `[archive]` sections (defaults when
    there is no config file). Relative paths are taken from the config file's directory."""
    parsed, source = _read_config(path)
    base = source.parent if source is not None else None

    def rel(value: Path | None) -> Path | None:
        if value is None or base is None or value.is_absolute():
            return value
        return base / value

    ledger = parsed.ledger.model_copy(
        update={
            "dir": rel(parsed.ledger.dir),
            "signing_key_file": rel(parsed.ledger.signing_key_file),
            "public_key_file": rel(parsed.ledger.public_key_file),
        }
    )
    metrics = (
        parsed.metrics.model_copy(update={"textfile": rel(parsed.metrics.textfile)})
        if parsed.metrics is not None
        else None
    )
    return Settings(
        source=source,
        ledger=ledger,
        schedule=parsed.schedule,
        notify=parsed.notify,
        metrics=metrics,
        archive=parsed.archive,
    )


def get_profile(name: str, path: Path | None = None) -> Profile:
    profiles = load_profiles(path)
    if name not in profiles:
        raise ConfigError(f"unknown environment '{name}' (known: {', '.join(sorted(profiles))})")
    return profiles[name]
