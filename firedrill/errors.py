"""The project's own error types. Vendor errors (psycopg, redis, botocore) are translated into
these at the adapter boundary, so drills and the CLI never handle a vendor exception."""

from __future__ import annotations

from pydantic import ValidationError


class HarnessError(Exception):
    """Base of every error firedrill raises on purpose. The CLI prints it as one line, exit 2."""


class ConfigError(HarnessError):
    """Bad configuration, profile, feature parameter or CLI value."""


class StagingError(HarnessError):
    """The local staging could not be started, checked or torn down."""


class TargetError(HarnessError):
    """A target (database, cache, cloud API) failed. `code` keeps the vendor's error code."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class DeadlineExceeded(HarnessError):
    """A wait passed its deadline."""


class GuardrailError(HarnessError):
    """A guardrail refused the action (production target, wrong account, ...)."""


class SteadyStateNotMet(HarnessError):
    """The system was not in steady state, so no fault was injected."""


class ProbeFailure(TargetError):
    """One canary operation failed; `probe_error` is the short class recorded in the sample."""

    def __init__(self, probe_error: str, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or probe_error, code=code)
        self.probe_error = probe_error


def first_line(exc: BaseException) -> str:
    """The one line an error is shown as (CLI, manifest, evidence checks): its first line, or its
    type's name when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def validation_message(exc: ValidationError, *, document: str = "") -> str:
    """The first pydantic error as 'where: what', e.g. 'profiles.x.probe.rate_hz: Input should be ...';
    `document` names the location when the error is about the whole document."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or document
    return f"{where}: {err['msg']}" if where else str(err["msg"])
