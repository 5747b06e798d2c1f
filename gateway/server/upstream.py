"""Calls to model endpoints: one pooled HTTP client per worker, explicit timeouts, and the
usage figures metered pricing needs.

Connection failures and timeouts become ``UpstreamError`` (502 to the client, nothing
charged). Payment and credential headers never travel upstream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from gateway.wire.errors import UpstreamError

# Never forwarded: hop-by-hop headers, and what pays or authenticates at the gateway.
_DROP = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "authorization",
    "payment-signature",
    "x-payment",
    "cookie",
    "accept-encoding",
}
_DROP_BACK = {"content-length", "connection", "keep-alive", "transfer-encoding", "content-encoding", "server", "date"}


class Upstream:
    def __init__(
        self, timeout_seconds: float, max_connections: int = 64, connect_timeout_seconds: float | None = None
    ) -> None:
        connect = min(5.0, timeout_seconds) if connect_timeout_seconds is None else connect_timeout_seconds
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds, connect=connect),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=False,
        )

    def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes, *, stream: bool) -> httpx.Response:
        forwarded = {k: v for k, v in headers.items() if k.lower() not in _DROP}
        request = self.client.build_request(method, url, headers=forwarded, content=body)
        try:
            return self.client.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise UpstreamError(f"the model endpoint timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the model endpoint is unreachable: {type(exc).__name__}") from exc

    def close(self) -> None:
        self.client.close()


def response_headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers.items() if k.lower() not in _DROP_BACK]


def usage_from(payload: Any) -> tuple[int, int] | None:
    """(input tokens, output tokens) from an OpenAI-style ``usage`` object, or None."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return None
    counts = []
    for names in (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens")):
        value = next((usage[n] for n in names if n in usage), 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**40:
            return None
        counts.append(value)
    return counts[0], counts[1]


def usage_from_body(body: bytes) -> tuple[int, int] | None:
    try:
        return usage_from(json.loads(body))
    except ValueError:
        return None


def sse_events(response: httpx.Response) -> Iterator[tuple[bytes, tuple[int, int] | None, bool, bool]]:
    """Re-emit each server-sent event as it arrives: (bytes to send, usage if the event carries
    it, whether it is the final ``[DONE]``, whether it is a usage-only chunk with no choices).
    Parsing is httpx-sse's; nothing is buffered past one event."""
    try:
        for event in EventSource(response).iter_sse():
            lines = []
            if event.event and event.event != "message":
                lines.append(f"event: {event.event}")
            if event.id:
                lines.append(f"id: {event.id}")
            lines.extend(f"data: {line}" for line in event.data.split("\n"))
            done = event.data.strip() == "[DONE]"
            usage, usage_only = None, False
            if not done:
                try:
                    payload = json.loads(event.data)
                except ValueError:
                    payload = None
                usage = usage_from(payload)
                usage_only = usage is not None and isinstance(payload, dict) and payload.get("choices") == []
            yield ("\n".join(lines) + "\n\n").encode(), usage, done, usage_only
    except (httpx.HTTPError, SSEError) as exc:
        raise UpstreamError(f"the model stream broke off: {type(exc).__name__}") from exc
