"""`harness serve` over loopback: OpenAI response and chunk formats, errors, hint pass-through."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from harness.errors import ConfigError, LLMTransportError
from harness.llm.base import ChatRequest, Message, Sampling
from harness.llm.local import LocalLLM
from harness.llm.openai_http import OpenAIHTTP, RetryPolicy
from harness.llm.scripted import ScriptedLLM
from harness.llm.server import run_asgi, serving
from tests.fixtures.tiny_model import CONTEXT_WINDOW, stop_string_from

CHAT = {"messages": [{"role": "user", "content": "Fix the failing test"}], "temperature": 0}


def sse_events(body: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    assert body.endswith("\n\n")
    return [line.removeprefix("data: ") for line in body.split("\n\n") if line]


async def test_completion_has_openais_shape(tiny_llm: LocalLLM) -> None:
    async with serving(tiny_llm) as url, httpx.AsyncClient() as http:
        reply = await http.post(f"{url}/chat/completions", json={**CHAT, "max_tokens": 6})
    assert reply.status_code == 200
    data = reply.json()
    assert data["object"] == "chat.completion" and data["id"].startswith("chatcmpl-")
    assert data["model"] == "tiny"
    (choice,) = data["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(
        choice["message"]["content"], str
    )
    assert choice["finish_reason"] == "length"
    usage = data["usage"]
    assert usage["completion_tokens"] == 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + 6


async def test_models_and_health(tiny_llm: LocalLLM) -> None:
    async with serving(tiny_llm) as url, httpx.AsyncClient() as http:
        models = (await http.get(f"{url}/models")).json()
        health = await http.get(url.removesuffix("/v1") + "/health")
    assert [m["id"] for m in models["data"]] == ["tiny"] and models["object"] == "list"
    assert health.status_code == 200 and health.json()["status"] == "ok"


@pytest.fixture(params=["generate", "engine"])
def streaming_llm(request: pytest.FixtureRequest) -> Any:
    """The tiny model on plain `generate` and on the engine: both stream as they decode."""
    return request.getfixturevalue("tiny_llm" if request.param == "generate" else "tiny_engine")


async def test_stream_sends_openai_chunks_that_add_up_to_the_answer(streaming_llm: Any) -> None:
    body = {**CHAT, "max_tokens": 24, "stream": True, "stream_options": {"include_usage": True}}
    async with serving(streaming_llm) as url, httpx.AsyncClient() as http:
        whole = (await http.post(f"{url}/chat/completions", json={**CHAT, "max_tokens": 24})).json()
        reply = await http.post(f"{url}/chat/completions", json=body)
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = sse_events(reply.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert "".join(content) == whole["choices"][0]["message"]["content"]
    assert sum(1 for piece in content if piece) > 1  # pieces as they decode, not one lump
    finish = chunks[-2]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 24


async def test_stream_with_a_stop_string_never_shows_it(streaming_llm: Any) -> None:
    async with serving(streaming_llm) as url, httpx.AsyncClient() as http:
        full = (await http.post(f"{url}/chat/completions", json={**CHAT, "max_tokens": 40})).json()
        text = full["choices"][0]["message"]["content"]
        stop = stop_string_from(text)
        body = {**CHAT, "max_tokens": 40, "stream": True, "stop": stop}
        reply = await http.post(f"{url}/chat/completions", json=body)
    chunks = [json.loads(e) for e in sse_events(reply.text)[:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == text[: text.index(stop)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_works_for_a_backend_that_cannot_stream() -> None:
    llm = ScriptedLLM(["scripted answer"])
    async with serving(llm) as url, httpx.AsyncClient() as http:
        reply = await http.post(f"{url}/chat/completions", json={**CHAT, "stream": True})
    chunks = [json.loads(e) for e in sse_events(reply.text)[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "scripted answer"


async def test_hints_pass_through_into_chat_request() -> None:
    def echo(request: ChatRequest) -> str:
        return f"{request.program_id}|{request.last_turn}|{request.next_tool}"

    request = ChatRequest(
        messages=(Message("user", "u"),),
        sampling=Sampling(max_tokens=50),
        program_id="traj-7",
        last_turn=True,
        next_tool="run_test",
    )
    async with serving(ScriptedLLM(echo)) as url:
        client = OpenAIHTTP("scripted", base_url=url)
        assert (await client.chat(request)).text == "traj-7|True|run_test"
        await client.aclose()


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ([1, 2], "JSON object"),
        ({}, "'messages' is required"),
        ({"messages": []}, "must not be empty"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({**CHAT, "temperature": -1}, "'temperature'"),
        ({**CHAT, "temperature": "hot"}, "'temperature'"),
        ({**CHAT, "max_tokens": 0}, "'max_tokens'"),
        ({**CHAT, "max_tokens": True}, "'max_tokens'"),
        ({**CHAT, "stop": [1]}, "'stop'"),
        ({**CHAT, "n": 2}, "'n' must be 1"),
        ({**CHAT, "stream": "yes"}, "'stream'"),
        ({**CHAT, "program_id": 5}, "'program_id'"),
        ({**CHAT, "last_turn": "no"}, "'last_turn'"),
    ],
)
async def test_bad_requests_get_400_with_openai_error(
    tiny_llm: LocalLLM, body: Any, complaint: str
) -> None:
    async with serving(tiny_llm) as url, httpx.AsyncClient() as http:
        reply = await http.post(f"{url}/chat/completions", json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and complaint in error["message"]


async def test_invalid_json_and_unknown_routes(tiny_llm: LocalLLM) -> None:
    async with serving(tiny_llm) as url, httpx.AsyncClient() as http:
        garbage = await http.post(f"{url}/chat/completions", content=b"{not json")
        missing = await http.get(f"{url}/completions")
        wrong_method = await http.get(f"{url}/chat/completions")
    assert garbage.status_code == 400 and "not valid JSON" in garbage.json()["error"]["message"]
    assert missing.status_code == 404 and "error" in missing.json()
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


@pytest.mark.parametrize("stream", [False, True])
async def test_context_too_long_is_400(tiny_llm: LocalLLM, stream: bool) -> None:
    body = {"messages": [{"role": "user", "content": "fox " * 600}], "stream": stream}
    async with serving(tiny_llm) as url, httpx.AsyncClient() as http:
        reply = await http.post(f"{url}/chat/completions", json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert f"context window is {CONTEXT_WINDOW} tokens" in error["message"]


async def test_backend_failure_is_500_server_error() -> None:
    async with serving(ScriptedLLM([])) as url, httpx.AsyncClient() as http:
        reply = await http.post(f"{url}/chat/completions", json=CHAT)
    assert reply.status_code == 500
    error = reply.json()["error"]
    assert error["type"] == "server_error" and "ran out of responses" in error["message"]


async def test_served_errors_reach_the_client_as_our_errors() -> None:
    async with serving(ScriptedLLM([])) as url:
        client = OpenAIHTTP("s", base_url=url, retry=RetryPolicy(max_retries=0))
        with pytest.raises(LLMTransportError, match=r"HTTP 500.*ran out of responses"):
            await client.chat(ChatRequest(messages=(Message("user", "u"),)))
        await client.aclose()


async def test_port_in_use_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            async with run_asgi(lambda *a: None, port=port):  # type: ignore[arg-type]
                pass
