"""Tell a chat channel when a drill failed or breached an objective: a Slack-compatible webhook.

The message is built only from the evidence's non-secret fields (drill, scenario, environment name,
verdict, objective figures, RTO/RPO/lost writes, run id, report path): never the error text, settings,
hosts or nodes. Everything sent (and every error message) also goes through `redact` with the configured
secrets and the webhook URL itself (a Slack webhook URL is a credential: messages only ever name its host).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from firedrill.errors import ConfigError, TargetError
from firedrill.evidence import EvidenceRecord

REDACTED = "[REDACTED]"


class SlackMessage(TypedDict):
    text: str
    blocks: list[dict[str, Any]]


class NotifyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    webhook_url: SecretStr
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    secrets: list[SecretStr] = Field(default_factory=list)  # values that must never leave this host
    notify_on: Literal["failure", "always"] = "failure"

    @field_validator("webhook_url")
    @classmethod
    def _http_only(cls, value: SecretStr) -> SecretStr:
        parts = urllib.parse.urlsplit(value.get_secret_value())
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an http(s):// URL")
        return value

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> NotifyConfig:
        """From a profile's `notify:` section; `webhook_url_env` names a variable holding the URL."""
        values = dict(data)
        env = values.pop("webhook_url_env", None)
        if env is not None:
            url = os.environ.get(str(env), "")
            if not url:
                raise ConfigError(f"notify.webhook_url_env: environment variable {env} is not set")
            values["webhook_url"] = url
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"notify.{where}: {first['msg']}") from exc  # never echoes the value

    def all_secrets(self) -> list[str]:
        url = self.webhook_url.get_secret_value()
        parts = urllib.parse.urlsplit(url)
        extra = [url, parts.path, parts.query] if parts.path not in ("", "/") or parts.query else [url]
        return [s.get_secret_value() for s in self.secrets] + [e for e in extra if e]


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by [REDACTED], also in its JSON-escaped and URL-quoted forms."""
    variants: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        variants.add(secret)
        variants.add(json.dumps(secret)[1:-1])
        variants.add(json.dumps(secret, ensure_ascii=False)[1:-1])
        variants.add(urllib.parse.quote(secret, safe=""))
        variants.add(urllib.parse.quote_plus(secret))
    for variant in sorted(variants, key=len, reverse=True):
        text = text.replace(variant, REDACTED)
    return text


def needs_notification(record: EvidenceRecord) -> bool:
    """A failed (or errored, aborted) drill, or any objective not met."""
    return record.verdict != "passed" or any(not v.met for v in record.verdicts)


def build_message(
    record: EvidenceRecord, report_path: str | Path | None = None, *, secrets: Iterable[str] = ()
) -> SlackMessage:
    """Slack-compatible `{"text", "blocks"}` from the record's non-secret fields, redacted."""
    secret_list = list(secrets)
    breached = [v for v in record.verdicts if not v.met]
    icon = ":white_check_mark:" if not needs_notification(record) else ":rotating_light:"
    title = (
        f"firedrill {record.verdict.upper()}: {record.drill} / {record.scenario} on {record.environment.name}"
    )
    m = record.measurements
    figures = [
        f"*RTO:* {_fig(m.rto_s, 's')}",
        f"*RPO window:* {_fig(m.rpo_window_s, 's')}",
        f"*Lost writes:* {_fig(m.lost_writes, '')}",
        f"*Verdict:* {_esc(record.verdict)}",
    ]
    breach_lines = [
        f"• {_esc(v.objective)}: measured {_fig(v.measured, v.unit)}, limit {v.limit:g} {_esc(v.unit)}"
        for v in breached
    ]
    summary = "; ".join(
        f"{v.objective} {_fig(v.measured, v.unit)} (limit {v.limit:g} {v.unit})" for v in breached
    )
    text = f"{icon} {title}" + (f" — breached: {summary}" if summary else "")
    context = [f"run `{_esc(record.run_id)}`", f"started {_esc(record.started_at)}"]
    if report_path is not None:
        context.append(f"report `{_esc(str(report_path))}`")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in figures]},
    ]
    if breach_lines:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "*Objectives breached*\n" + "\n".join(breach_lines)},
            }
        )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
    message: SlackMessage = {"text": text, "blocks": blocks}
    return _redact_tree(message, secret_list)  # type: ignore[no-any-return]


def send_webhook(
    url: str, payload: Mapping[str, Any], *, timeout_s: float = 10.0, secrets: Iterable[str] = ()
) -> None:
    """POST `payload` as JSON. Failures raise TargetError naming only the webhook's host."""
    secret_list = [*secrets, url]
    body = redact(json.dumps(_redact_tree(dict(payload), secret_list), ensure_ascii=False), secret_list)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("notify webhook URL must be an http(s):// URL")
    host = parts.hostname
    request = urllib.request.Request(
        url,
        data=body.encode("utf-8"),
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "firedrill-notify"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read(1024)
    except urllib.error.HTTPError as exc:
        raise TargetError(
            f"webhook POST to {host} failed: HTTP {exc.code} {exc.reason}", code=str(exc.code)
        ) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise TargetError(
                f"webhook POST to {host} timed out after {timeout_s:g} s", code="timeout"
            ) from None
        reason = redact(str(exc.reason), secret_list)
        raise TargetError(f"webhook POST to {host} failed: {reason}", code="URLError") from None
    except TimeoutError:
        raise TargetError(f"webhook POST to {host} timed out after {timeout_s:g} s", code="timeout") from None
    except OSError as exc:
        reason = redact(str(exc), secret_list)
        raise TargetError(f"webhook POST to {host} failed: {reason}", code=type(exc).__name__) from None


def notify(record: EvidenceRecord, config: NotifyConfig, report_path: str | Path | None = None) -> bool:
    """Send the message if the record calls for one (or always, if configured). True when sent."""
    if config.notify_on == "failure" and not needs_notification(record):
        return False
    secrets = config.all_secrets()
    message = build_message(record, report_path, secrets=secrets)
    send_webhook(config.webhook_url.get_secret_value(), message, timeout_s=config.timeout_s, secrets=secrets)
    return True


def _fig(value: float | int | None, unit: str) -> str:
    if value is None:
        return "not measured"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}".strip()


def _esc(text: str) -> str:
    """Slack mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _redact_tree(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: _redact_tree(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_tree(v, secrets) for v in value]
    return value
