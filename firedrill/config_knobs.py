"""The parts of a profile that shape the staging and the traffic of a drill: PostgreSQL replication
and commit knobs, Redis replication and persistence knobs, a background load, a service probe.

Validated with pydantic like the rest of `firedrill.config` (a bad value names itself in one line):

```toml
[profiles.local-async]
kind = "local"
replication = "async"            # sync (default), async, quorum (ANY 1)
synchronous_commit = "off"       # on (default), remote_write, remote_apply, local, off
redis = { min_replicas_to_write = 1, appendfsync = "everysec" }
load = { writers = 8, rate_per_s = 2000, read_share = 0.2, row_bytes = 512 }
service = { url = "http://127.0.0.1:8080", rate_hz = 50 }
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Replication = Literal["sync", "async", "quorum"]
SyncCommit = Literal["on", "remote_write", "remote_apply", "local", "off"]
AppendFsync = Literal["always", "everysec", "no"]


class RedisKnobs(BaseModel):
    """`[profiles.x.redis]`: the local Redis staging's replication and persistence knobs."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    min_replicas_to_write: int = Field(0, ge=0, le=2)  # the staging has 2 replicas
    appendfsync: AppendFsync | None = None  # None: AOF off; a policy turns AOF on with it


class LoadSettings(BaseModel):
    """`[profiles.x.load]`: the background load the step "Given the profile's background load" runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    writers: int = Field(8, ge=1, le=64)
    rate_per_s: float = Field(2000.0, ge=1, le=100_000)
    read_share: float = Field(0.0, ge=0, le=0.95)
    row_bytes: int = Field(64, ge=0, le=1_048_576)
    op_timeout_s: float = Field(2.0, ge=0.05, le=60)


class ServiceSettings(BaseModel):
    """`[profiles.x.service]`: an application endpoint the service probe writes through."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$")
    rate_hz: float = Field(50.0, ge=0.1, le=1000)
    op_timeout_s: float = Field(0.5, ge=0.01, le=60)
