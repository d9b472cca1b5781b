"""The project's own error types. Vendor errors (psycopg, redis, botocore) are translated into
these at the adapter boundary, so drills and the CLI never handle a vendor exception."""

from __future__ import annotations


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
