"""JSON over HTTP with the standard library, for the control planes of the HA staging (etcd's v3
gateway, Patroni's REST API): short timeouts, never a proxy, every failure one `RestError` line.

The standard library is enough for a handful of loopback (or operator-given) URLs with hard
timeouts, so no HTTP client is added as a dependency.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from firedrill.errors import TargetError

# Never an environment proxy: control-plane calls go straight to the URL the profile names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RestError(TargetError):
    """An HTTP control-plane call that got no answer (refused, timed out, not JSON when JSON was due)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any  # parsed JSON, or the text when the body is not JSON

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.body if isinstance(self.body, str) else json.dumps(self.body, sort_keys=True)


def call(method: str, url: str, payload: object = None, *, timeout_s: float = 1.0) -> Reply:
    """One request; any HTTP status is a Reply (503 from Patroni's /primary means 'not primary'),
    no answer at all is a RestError naming the URL (never a credential: URLs carry none here)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return Reply(response.status, _parse(response.read()))
    except urllib.error.HTTPError as exc:
        try:
            return Reply(exc.code, _parse(exc.read()))
        finally:
            exc.close()
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RestError(f"{method} {url}: no answer ({reason})") from exc


def _parse(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text) if text.strip() else ""
    except json.JSONDecodeError:
        return text.strip()


def get_json(url: str, *, timeout_s: float = 1.0) -> Any:
    """GET that must answer 2xx with JSON."""
    reply = call("GET", url, timeout_s=timeout_s)
    if not reply.ok or isinstance(reply.body, str):
        raise RestError(f"GET {url}: HTTP {reply.status} {reply.text()[:200]}")
    return reply.body
