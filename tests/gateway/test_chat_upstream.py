"""The fake chat upstream speaks OpenAI's wire format, and fails on request; servers.py stops servers."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.servers import ServerHandle, run_wsgi_in_process

APP = "tests.support.upstreams.chat_upstream:create_chat_app"
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "an answer"},
    {"role": "user", "content": "please  echo these   five words"},
]
PROMPT_WORDS = 3 + 2 + 2 + 5


@pytest.fixture(scope="module")
def chat() -> Iterator[ServerHandle]:
    with run_wsgi_in_process(APP) as server:
        yield server


def post(server: ServerHandle, body: dict[str, Any], headers: dict[str, str] | None = None, **kw: Any) -> Any:
    return requests.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "fake", "messages": MESSAGES, **body},
        headers=headers or {},
        timeout=kw.pop("timeout", 10),
        **kw,
    )


def sse_events(response: requests.Response) -> list[str]:
    return [line.decode()[len("data: ") :] for line in response.iter_lines() if line]


def test_non_stream_echoes_last_user_message_with_word_usage(chat: ServerHandle) -> None:
    body = post(chat, {}).json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "please echo these five words", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": PROMPT_WORDS, "completion_tokens": 5, "total_tokens": PROMPT_WORDS + 5}
    assert post(chat, {}).json()["choices"] == body["choices"]  # deterministic


def test_max_tokens_caps_the_reply_and_reports_length(chat: ServerHandle) -> None:
    body = post(chat, {"max_tokens": 2}).json()
    assert body["choices"][0]["message"]["content"] == "please echo"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


def test_stream_without_include_usage_has_no_usage_chunk(chat: ServerHandle) -> None:
    response = post(chat, {"stream": True}, stream=True)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert all(len(c["choices"]) == 1 for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "please echo these five words"
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    assert len({c["id"] for c in chunks}) == 1


def test_stream_with_include_usage_ends_with_a_usage_only_chunk(chat: ServerHandle) -> None:
    response = post(chat, {"stream": True, "stream_options": {"include_usage": True}}, stream=True)
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": PROMPT_WORDS, "completion_tokens": 5, "total_tokens": PROMPT_WORDS + 5}
    assert all(c["usage"] is None and len(c["choices"]) == 1 for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_official_openai_client_streams_and_reads_usage(chat: ServerHandle) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{chat.url}/v1", api_key="x", timeout=10, max_retries=0)
    plain = client.chat.completions.create(model="fake", messages=MESSAGES)
    assert plain.choices[0].message.content == "please echo these five words"
    assert plain.usage is not None and plain.usage.completion_tokens == 5

    stream = client.chat.completions.create(
        model="fake",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "please echo these five words"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == PROMPT_WORDS + 5
    client.close()


def test_delay_slows_each_chunk(chat: ServerHandle) -> None:
    started = time.monotonic()
    events = sse_events(post(chat, {"stream": True}, {"X-Test-Delay-Ms": "60"}, stream=True))
    elapsed = time.monotonic() - started
    assert len(events) == 1 + 5 + 1 + 1  # role, five words, finish, [DONE]
    assert elapsed >= 0.06 * len(events) * 0.9


def test_fail_500(chat: ServerHandle) -> None:
    for stream in (False, True):
        response = post(chat, {"stream": stream}, {"X-Test-Fail": "500"})
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "upstream_failure"


def test_fail_timeout_outlasts_the_client(chat: ServerHandle) -> None:
    with pytest.raises(requests.ReadTimeout):
        post(chat, {}, {"X-Test-Fail": "timeout"}, timeout=(2, 0.5))


def test_fail_drop_cuts_the_stream_before_done(chat: ServerHandle) -> None:
    seen: list[str] = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        body = {"stream": True, "stream_options": {"include_usage": True}}
        response = post(chat, body, {"X-Test-Fail": "drop"}, stream=True)
        for line in response.iter_lines():
            if line:
                seen.append(line.decode())
    assert seen and "data: [DONE]" not in seen
    assert not any('"usage": {' in line for line in seen)


def test_fail_drop_cuts_a_plain_response_short(chat: ServerHandle) -> None:
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        post(chat, {}, {"X-Test-Fail": "drop"})


def test_fail_stall_goes_silent_mid_stream(chat: ServerHandle) -> None:
    response = post(chat, {"stream": True}, {"X-Test-Fail": "stall"}, stream=True, timeout=(2, 0.5))
    lines = response.iter_lines()
    assert next(lines).startswith(b"data: ")
    with pytest.raises(requests.exceptions.ConnectionError):  # the read timeout, raised mid-body
        list(lines)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"messages": []}, {}),
        ({"messages": "hi"}, {}),
        ({"messages": [{"content": "no role"}]}, {}),
        ({"model": None}, {}),
        ({"max_tokens": 0}, {}),
        ({"stream": "yes"}, {}),
        ({}, {"X-Test-Fail": "explode"}),
        ({}, {"X-Test-Delay-Ms": "soon"}),
    ],
)
def test_bad_requests_are_400_json(chat: ServerHandle, body: dict[str, Any], headers: dict[str, str]) -> None:
    response = post(chat, body, headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_gunicorn_mode_serves_and_stop_frees_the_port() -> None:
    with run_wsgi_in_process(APP, server="gunicorn", threads=2) as server:
        events = sse_events(post(server, {"stream": True}, stream=True))
        assert events[-1] == "[DONE]"
        assert server.alive()
    assert not server.alive()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=1):
        pass


def test_a_factory_that_fails_raises_with_its_log() -> None:
    with pytest.raises(RuntimeError, match="No module named"):
        run_wsgi_in_process("tests.no_such_module:create_app", startup_timeout=20)
