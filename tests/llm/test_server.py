"""`harness serve` over loopback: OpenAI response and chunk formats, hint pass-through; every
bad field a 4xx naming it; faults, a dead engine, clients that leave, and 200 at once."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.errors import ConfigError, LLMTransportError
from harness.llm.base import ChatRequest, Message, Sampling
from harness.llm.engine.client import UNHEALTHY_AFTER, EngineLLM
from harness.llm.engine.config import EngineConfig
from harness.llm.engine.load import EngineSettings, build_engine_llm
from harness.llm.local import LocalLLM, load_pretrained
from harness.llm.openai_http import OpenAIHTTP, RetryPolicy
from harness.llm.scripted import ScriptedLLM
from harness.llm.server import ServerStats, build_app, run_asgi, serving
from tests.fixtures.faults import (
    POISON,
    BreakableClock,
    FailAt,
    Gate,
    Poison,
    hook,
    poison_prompt,
)
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


TOO_BIG_SEED = 1180591620717411303424  # the seed of issue 13: it killed the engine for good
MESSAGE = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ([1, 2], None, "invalid_type"),
        ({}, "messages", "missing_required_parameter"),
        ({"messages": "hi"}, "messages", "invalid_type"),
        ({"messages": []}, "messages", "empty_array"),
        ({"messages": ["hi"]}, "messages[0]", "invalid_type"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"messages": [{"content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content", "invalid_type"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "invalid_type"),
        ({"messages": [{"role": "user", "content": "x", "x": 1}]}, "messages[0].x", None),
        ({"messages": [{"role": "user", "content": "x", "name": 7}]}, "messages[0].name", None),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0].type",
            "unsupported_value",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0]",
            "invalid_value",
        ),
        (
            {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]},
            "messages[0].tool_calls",
            "unsupported_value",
        ),
        ({**CHAT, "model": 5}, "model", "invalid_type"),
        ({**CHAT, "seed": TOO_BIG_SEED}, "seed", "invalid_value"),
        ({**CHAT, "seed": -(2**63) - 1}, "seed", "invalid_value"),
        ({**CHAT, "seed": 1.5}, "seed", "invalid_type"),
        ({**CHAT, "seed": "7"}, "seed", "invalid_type"),
        ({**CHAT, "temperature": -1}, "temperature", "invalid_value"),
        ({**CHAT, "temperature": 2.5}, "temperature", "invalid_value"),
        (json.dumps({**CHAT, "temperature": float("nan")}).encode(), "temperature", None),
        (json.dumps({**CHAT, "top_p": float("-inf")}).encode(), "top_p", "invalid_value"),
        ({**CHAT, "temperature": "hot"}, "temperature", "invalid_type"),
        ({**CHAT, "top_p": 0}, "top_p", "invalid_value"),
        ({**CHAT, "top_p": 1.5}, "top_p", "invalid_value"),
        ({**CHAT, "max_tokens": 0}, "max_tokens", "invalid_value"),
        ({**CHAT, "max_tokens": True}, "max_tokens", "invalid_type"),
        ({**CHAT, "max_tokens": 2**31}, "max_tokens", "invalid_value"),
        ({**CHAT, "max_completion_tokens": -3}, "max_completion_tokens", "invalid_value"),
        ({**CHAT, "max_completion_tokens": "9"}, "max_completion_tokens", "invalid_type"),
        ({**CHAT, "n": 0}, "n", "invalid_value"),
        ({**CHAT, "n": 2}, "n", "unsupported_value"),
        ({**CHAT, "stop": [1]}, "stop", "invalid_type"),
        ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
        ({**CHAT, "stop": ""}, "stop", "invalid_value"),
        ({**CHAT, "stop": "x" * 257}, "stop", "invalid_value"),
        ({**CHAT, "stream": "yes"}, "stream", "invalid_type"),
        ({**CHAT, "stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
        ({**CHAT, "stream": True, "stream_options": []}, "stream_options", "invalid_type"),
        (
            {**CHAT, "stream": True, "stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
            "invalid_type",
        ),
        (
            {**CHAT, "stream": True, "stream_options": {"usage": True}},
            "stream_options.usage",
            "unknown_parameter",
        ),
        ({**CHAT, "temprature": 0.5}, "temprature", "unknown_parameter"),
        ({**CHAT, "logprobs": True}, "logprobs", "unsupported_value"),
        ({**CHAT, "top_logprobs": 21}, "top_logprobs", "invalid_value"),
        ({**CHAT, "frequency_penalty": 0.5}, "frequency_penalty", "unsupported_value"),
        ({**CHAT, "presence_penalty": 3}, "presence_penalty", "invalid_value"),
        ({**CHAT, "logit_bias": {"5": 100}}, "logit_bias", "unsupported_value"),
        ({**CHAT, "tools": [{"type": "function"}]}, "tools", "unsupported_value"),
        ({**CHAT, "tool_choice": "required"}, "tool_choice", "unsupported_value"),
        ({**CHAT, "response_format": {"type": "json_object"}}, "response_format", None),
        ({**CHAT, "response_format": "json"}, "response_format", "invalid_type"),
        ({**CHAT, "reasoning_effort": "high"}, "reasoning_effort", "unsupported_value"),
        ({**CHAT, "user": 5}, "user", "invalid_type"),
        ({**CHAT, "metadata": {"a": 1}}, "metadata", "invalid_type"),
        ({**CHAT, "program_id": 5}, "program_id", "invalid_type"),
        ({**CHAT, "program_id": "p" * 300}, "program_id", "invalid_value"),
        ({**CHAT, "last_turn": "no"}, "last_turn", "invalid_type"),
        ({**CHAT, "next_tool": ["run_test"]}, "next_tool", "invalid_type"),
    ],
)
async def test_bad_fields_get_400_naming_them_in_openais_error_shape(
    tiny_llm: LocalLLM, body: Any, param: str | None, code: str | None
) -> None:
    raw = {"content": body} if isinstance(body, bytes) else {"json": body}  # NaN: as Python sends
    async with serving(tiny_llm) as url, httpx.AsyncClient() as http:
        reply = await http.post(f"{url}/chat/completions", **raw)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert param.split(".")[0].split("[")[0] in error["message"]


async def test_neutral_values_of_features_it_lacks_are_accepted(tiny_llm: LocalLLM) -> None:
    body = {
        **CHAT,
        "model": "tiny",
        "max_completion_tokens": 3,
        "n": 1,
        "seed": 2**63 - 1,
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "logprobs": False,
        "top_logprobs": 0,
        "logit_bias": {},
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "response_format": {"type": "text"},
        "modalities": ["text"],
        "user": "u-1",
        "metadata": {"run": "x"},
        "store": False,
        "stop": None,
        "messages": [
            {"role": "developer", "content": "be brief", "name": "ops"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": None, "refusal": None, "tool_calls": []},
            {"role": "user", "content": "again"},
        ],
    }
    async with serving(tiny_llm) as url, httpx.AsyncClient() as http:
        reply = await http.post(f"{url}/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("stream", [False, True])
async def test_the_seed_that_killed_the_engine_is_refused_and_serving_goes_on(
    streaming_llm: Any, stream: bool
) -> None:
    async with serving(streaming_llm) as url, httpx.AsyncClient() as http:
        body = {**CHAT, "max_tokens": 4, "stream": stream}
        bad = await http.post(f"{url}/chat/completions", json={**body, "seed": TOO_BIG_SEED})
        good = await http.post(f"{url}/chat/completions", json={**body, "seed": 7})
        health = await http.get(url.removesuffix("/v1") + "/health")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "seed"
    assert good.status_code == 200 and health.status_code == 200


async def test_unknown_model_is_404_model_not_found_as_openai_answers(tiny_llm: LocalLLM) -> None:
    async with (
        serving(tiny_llm, model_names=("tiny", "gpt-4o")) as url,
        httpx.AsyncClient() as http,
    ):
        listed = (await http.get(f"{url}/models")).json()
        known = await http.get(f"{url}/models/gpt-4o")
        unknown = await http.get(f"{url}/models/gpt-5")
        alias = await http.post(
            f"{url}/chat/completions", json={**CHAT, "model": "gpt-4o", "max_tokens": 2}
        )
        wrong = await http.post(f"{url}/chat/completions", json={**CHAT, "model": "gpt-5"})
    assert [m["id"] for m in listed["data"]] == ["tiny", "gpt-4o"]
    assert known.status_code == 200 and known.json()["id"] == "gpt-4o"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert alias.status_code == 200
    assert wrong.status_code == 404
    error = wrong.json()["error"]
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    assert "gpt-5" in error["message"] and "tiny" in error["message"]


async def test_a_body_over_the_limit_is_413_before_it_is_read_whole() -> None:
    app = build_app(ScriptedLLM(["x"]), max_body_bytes=300_000)
    async with run_asgi(app) as root, httpx.AsyncClient() as http:
        big = {"messages": [{"role": "user", "content": "y" * 400_000}]}
        reply = await http.post(f"{root}/v1/chat/completions", json=big)
        nested = b"[" * 100_000 + b"]" * 100_000  # deeper than Python's JSON parser recurses
        deep = await http.post(f"{root}/v1/chat/completions", content=nested)
    assert reply.status_code == 413 and "over 300000 bytes" in reply.json()["error"]["message"]
    assert deep.status_code == 400 and "not valid JSON" in deep.json()["error"]["message"]


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
        client = OpenAIHTTP("scripted", base_url=url, retry=RetryPolicy(max_retries=0))
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


# -- faults, dead engines, clients that leave, load ------------------------------------------


@pytest.fixture(params=["generate", "engine"])
async def fresh(request: pytest.FixtureRequest, tiny_model_dir: Path) -> AsyncIterator[Any]:
    """A tiny model of its own (tests hook its forward pass) on `generate` or the engine."""
    model, tokenizer = load_pretrained(str(tiny_model_dir), device="cpu")
    llm: LocalLLM | EngineLLM
    if request.param == "generate":
        llm = LocalLLM(model, tokenizer, name="tiny")
    else:
        settings = EngineSettings(kv_memory_gb=0.02)
        llm = build_engine_llm(
            model, tokenizer, name="tiny", context_window=CONTEXT_WINDOW, settings=settings
        )
    yield llm, model, tokenizer
    await llm.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_fault_inside_generation_fails_only_that_request(fresh: Any, stream: bool) -> None:
    llm, model, tokenizer = fresh
    poison = Poison(tokenizer.convert_tokens_to_ids(POISON))
    handle = hook(model, poison)
    try:
        async with serving(llm) as url, httpx.AsyncClient() as http:
            body = {**CHAT, "max_tokens": 5}
            before = await http.post(f"{url}/chat/completions", json=body)
            poisoned = [{"role": "user", "content": poison_prompt()}]
            bad_body = {**body, "messages": poisoned, "stream": stream}
            bad = await http.post(f"{url}/chat/completions", json=bad_body)
            after = await http.post(f"{url}/chat/completions", json=body)
            health = await http.get(url.removesuffix("/v1") + "/health")
    finally:
        handle.remove()
    assert poison.hits == 1
    assert bad.status_code == 500
    error = bad.json()["error"]  # the fault comes before the first token: a status code still
    assert error["type"] == "server_error" and "injected fault" in error["message"]
    assert after.status_code == 200 and after.json()["choices"] == before.json()["choices"]
    assert health.status_code == 200
    if isinstance(llm, EngineLLM):
        assert llm.engine.stats.failed_requests == 1


async def test_a_fault_mid_stream_ends_it_with_an_error_event(fresh: Any) -> None:
    llm, model, _ = fresh
    handle = hook(model, FailAt(4))  # the prompt, two tokens, then the fault
    try:
        async with serving(llm) as url, httpx.AsyncClient() as http:
            body = {**CHAT, "max_tokens": 20, "stream": True}
            reply = await http.post(f"{url}/chat/completions", json=body)
            after = await http.post(f"{url}/chat/completions", json={**CHAT, "max_tokens": 3})
    finally:
        handle.remove()
    assert reply.status_code == 200
    events = sse_events(reply.text)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and "injected fault" in error["message"]
    assert after.status_code == 200


async def test_a_dead_engine_answers_503_on_health_and_requests(
    tiny_model_dir: Path,
) -> None:
    model, tokenizer = load_pretrained(str(tiny_model_dir), device="cpu")
    clock = BreakableClock()
    config = EngineConfig(block_size=16, num_blocks=64, max_model_len=CONTEXT_WINDOW)
    llm = EngineLLM(model, tokenizer, config=config, clock=clock, model_name="tiny")
    async with serving(llm) as url, httpx.AsyncClient() as http:
        health_url = url.removesuffix("/v1") + "/health"
        ok = await http.post(f"{url}/chat/completions", json={**CHAT, "max_tokens": 2})
        assert ok.status_code == 200 and (await http.get(health_url)).status_code == 200
        clock.broken = True
        dying = await http.post(f"{url}/chat/completions", json={**CHAT, "max_tokens": 2})
        dead = await http.post(f"{url}/chat/completions", json={**CHAT, "max_tokens": 2})
        health = await http.get(health_url)
    await llm.aclose()
    assert dying.status_code == 503 and "the engine loop failed" in dying.text
    assert dead.status_code == 503
    assert dead.json()["error"]["code"] == "service_unavailable"
    assert health.status_code == 503
    assert "the clock broke" in health.json()["reason"]


async def test_a_closed_engine_is_503_on_health(tiny_model_dir: Path) -> None:
    model, tokenizer = load_pretrained(str(tiny_model_dir), device="cpu")
    llm = EngineLLM(model, tokenizer, config=EngineConfig(num_blocks=64), model_name="tiny")
    await llm.aclose()
    async with serving(llm) as url, httpx.AsyncClient() as http:
        health = await http.get(url.removesuffix("/v1") + "/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"


async def test_steps_failing_in_a_row_are_503_on_health_until_one_succeeds(
    tiny_model_dir: Path,
) -> None:
    model, tokenizer = load_pretrained(str(tiny_model_dir), device="cpu")
    handle = hook(model, Poison(tokenizer.convert_tokens_to_ids(POISON)))
    config = EngineConfig(block_size=16, num_blocks=64, max_model_len=CONTEXT_WINDOW)
    llm = EngineLLM(model, tokenizer, config=config, model_name="tiny")
    bad = {"messages": [{"role": "user", "content": poison_prompt()}], "max_tokens": 2}
    async with serving(llm) as url, httpx.AsyncClient() as http:
        health_url = url.removesuffix("/v1") + "/health"
        codes = [
            (await http.post(f"{url}/chat/completions", json=bad)).status_code
            for _ in range(UNHEALTHY_AFTER)
        ]
        assert codes == [500] * (UNHEALTHY_AFTER - 1) + [503]  # the last one made it unhealthy
        sick = await http.get(health_url)
        good = await http.post(f"{url}/chat/completions", json={**CHAT, "max_tokens": 2})
        well = await http.get(health_url)
    handle.remove()
    await llm.aclose()
    assert sick.status_code == 503 and "injected fault" in sick.json()["reason"]
    assert good.status_code == 200 and well.status_code == 200


async def _until(check: Callable[[], bool], what: str) -> None:
    """Wait for a condition another thread or task brings about (not a timing assert: the
    deadline only turns a hang into a failure)."""
    for _ in range(6000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still waiting for {what}")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_leaves_stops_its_generation(fresh: Any, stream: bool) -> None:
    """The model's first forward pass holds until the client has gone and the server has
    noticed; then the request must end within a forward or two, not run its 200 tokens."""
    llm, model, _ = fresh
    gate = Gate()
    handle = hook(model, gate)
    stats = ServerStats()
    try:
        async with serving(llm, stats=stats) as url:
            host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
            body = json.dumps({**CHAT, "max_tokens": 200, "stream": stream}).encode()
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            await asyncio.to_thread(gate.entered.wait, 60)
            writer.close()  # the client goes away mid-generation
            await writer.wait_closed()
            await _until(lambda: stats.client_gone == 1, "the server to see the client leave")
            gate.opened.set()
            if isinstance(llm, EngineLLM):
                engine = llm.engine
                await _until(lambda: not engine.has_unfinished(), "the engine to drop it")
                assert engine.stats.aborted == 1
                assert gate.forwards <= 2
            else:  # one worker thread: a second request ends after the first
                async with httpx.AsyncClient() as http:
                    after = await http.post(
                        f"{url}/chat/completions", json={**CHAT, "max_tokens": 1}
                    )
                assert after.status_code == 200
                assert gate.forwards <= 3  # the left one's first token or two, then this one
    finally:
        gate.opened.set()
        handle.remove()


@pytest.mark.parametrize("backend", ["generate", "engine"])
async def test_200_concurrent_requests_are_all_answered(
    request: pytest.FixtureRequest, backend: str
) -> None:
    llm = request.getfixturevalue("tiny_llm" if backend == "generate" else "tiny_engine")
    stats = ServerStats()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with (
        serving(llm, stats=stats) as url,
        httpx.AsyncClient(limits=limits, timeout=600) as http,
    ):

        async def ask(i: int) -> httpx.Response:
            messages = [{"role": "user", "content": f"request {i}: fix the failing test"}]
            return await http.post(
                f"{url}/chat/completions", json={"messages": messages, "max_tokens": 3}
            )

        replies = await asyncio.gather(*(ask(i) for i in range(200)))
    assert [r.status_code for r in replies] == [200] * 200
    for reply in replies:
        (choice,) = reply.json()["choices"]
        assert isinstance(choice["message"]["content"], str)
        assert 1 <= reply.json()["usage"]["completion_tokens"] <= 3
    assert (stats.requests, stats.rejected, stats.failed) == (200, 0, 0)
