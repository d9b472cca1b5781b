"""The service probe's client: sequence-numbered records written through an application's HTTP
endpoint and read back through it (httpx, one keep-alive connection a probe session).

The contract (examples/reference_app implements it; so can any service):
    POST {url}/records[?store=S]  {"probe": "<id>", "seq": <int>}  -> 2xx, JSON {"node": "..."} optional
    GET  {url}/records?probe=<id>[&store=S]                        -> 200 {"seqs": [...]}
A refused request is classed by the application's own error word when it sends one
(503 {"error": "PoolTimeout"} -> "HTTP503:PoolTimeout"), else by its status or the transport error.
"""

from __future__ import annotations

import contextlib

import httpx

from firedrill.errors import ProbeFailure, TargetError

CLIENT = "httpx, one keep-alive connection a probe session, hard deadline enforced by the probe"


def _params(store: str | None) -> dict[str, str]:
    return {"store": store} if store else {}


def _refusal(response: httpx.Response) -> str:
    word = ""
    with contextlib.suppress(ValueError, AttributeError):
        word = str(response.json().get("error", ""))
    return f"HTTP{response.status_code}" + (f":{word}" if word.isidentifier() else "")


def transport_error(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "ConnectError"
    if isinstance(exc, httpx.TimeoutException):
        return "Timeout"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "ConnectionLost"
    return type(exc).__name__


class HttpServiceSession:
    """A `firedrill.probes.ProbeSession` through the application."""

    def __init__(self, url: str, probe_id: str, timeout_s: float, store: str | None = None) -> None:
        self._probe = probe_id
        self._params = _params(store)
        self._client = httpx.Client(base_url=url.rstrip("/"), timeout=httpx.Timeout(timeout_s))

    def write(self, seq: int) -> str:
        try:
            response = self._client.post(
                "/records", params=self._params, json={"probe": self._probe, "seq": seq}
            )
        except httpx.HTTPError as exc:
            raise ProbeFailure(transport_error(exc)) from exc
        if not response.is_success:
            raise ProbeFailure(_refusal(response))
        node = ""
        with contextlib.suppress(ValueError, AttributeError):
            node = str(response.json().get("node", ""))
        return node or "service"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def read_back(url: str, probe_id: str, timeout_s: float = 10.0, store: str | None = None) -> frozenset[int]:
    """The seqs the application returns for the probe, read through the application itself."""
    try:
        with httpx.Client(base_url=url.rstrip("/"), timeout=httpx.Timeout(timeout_s)) as client:
            response = client.get("/records", params={"probe": probe_id, **_params(store)})
    except httpx.HTTPError as exc:
        raise TargetError(
            f"cannot read the service probe's records back from {url}: {transport_error(exc)}"
        ) from exc
    if not response.is_success:
        raise TargetError(f"cannot read the service probe's records back from {url}: {_refusal(response)}")
    try:
        return frozenset(int(s) for s in response.json()["seqs"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TargetError(f"{url}/records did not answer {{'seqs': [...]}}") from exc
