"""Reading a provider's answer within bounds: at most so many bytes, by a deadline.

Providers are other people's servers (under ``accept = "any"``, anyone's). httpx's timeouts
bound each read, not the whole answer, and ``read()`` keeps whatever it is sent: a provider
that dribbles one byte a second (slowloris) or answers gigabytes (or a small gzip that inflates
to gigabytes: the count is of decoded bytes) would hold a worker thread or its memory. Here an
answer is read in chunks and given up at ``max_bytes`` or at ``deadline``, whichever comes
first; the caller treats that like any failed attempt (failover, nothing charged).
"""

from __future__ import annotations

import time

import httpx


class AnswerOutOfBounds(Exception):
    """The provider's answer was larger or slower than the pool allows (the message says which)."""


def read_bounded(response: httpx.Response, *, max_bytes: int, deadline: float) -> bytes:
    """The whole body of a streamed ``response``, or ``AnswerOutOfBounds``; ``deadline`` is a
    ``time.monotonic()`` value. Each read is still bounded by the client's own read timeout, so
    the deadline is overshot by at most one read."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise AnswerOutOfBounds(f"declared an answer of {declared} bytes, above the pool's {max_bytes}")
    parts: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():  # as the bytes arrive (a chunk size would wait to fill it)
        size += len(chunk)
        if size > max_bytes:
            raise AnswerOutOfBounds(f"answered more than the pool's {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise AnswerOutOfBounds("did not finish its answer within the pool's answer timeout")
        parts.append(chunk)
    return b"".join(parts)
