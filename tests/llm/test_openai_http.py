"""The OpenAI-compatible client against real loopback servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from harness.errors import ContextTooLong, LLMTransportError
from harness.llm.accounting import Price
from harness.llm.base import ChatRequest, Message, Sampling
from harness.llm.openai_http import OpenAIHTTP, RetryPolicy, retry_after_s
from tests.fixtures.http_script import Reply, completion, scripted_server

REQUEST = ChatRequest(messages=(Message("user", "hi"),), sampling=Sampling(max_tokens=8))
POLICY = RetryPolicy(max_retries=5, backoff_s=0.1, jitter=0.25)


class SleepLog:
    """Records the waits the client asks for instead of waiting (the backoff is the subject)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def client(base_url: str, sleeps: SleepLog | None = None, **kwargs: object) -> OpenAIHTTP:
    kwargs.setdefault("retry", POLICY)
    return OpenAIHTTP(
        "tiny-model",
        base_url=base_url,
        sleep=sleeps or SleepLog(),
        rng=random.Random(0),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port bound but not listening: every connection is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


async def test_429_storm_is_retried_with_exponential_backoff() -> None:
    sleeps = SleepLog()
    replies = [Reply(429, "slow down")] * 4 + [completion("finally")]
    async with scripted_server(replies) as (url, server):
        llm = client(url, sleeps)
        response = await llm.chat(REQUEST)
        await llm.aclose()
    assert response.text == "finally"
    assert len(server.bodies) == 5
    assert len(sleeps.delays) == 4
    for attempt, delay in enumerate(sleeps.delays):
        base = 0.1 * 2**attempt
        assert base * 0.75 <= delay <= base * 1.25


async def test_retry_after_header_sets_the_wait() -> None:
    sleeps = SleepLog()
    replies = [Reply(429, "busy", {"Retry-After": "7"}), Reply(503, "", {"Retry-After": "0.5"})]
    async with scripted_server([*replies, completion()]) as (url, _):
        llm = client(url, sleeps)
        await llm.chat(REQUEST)
        await llm.aclose()
    assert sleeps.delays == [7.0, 0.5]


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    when = format_datetime(datetime.fromtimestamp(1_000_030, UTC), usegmt=True)
    assert retry_after_s(when, now=1_000_000) == pytest.approx(30.0)
    assert retry_after_s(when, now=2_000_000) == 0.0


async def test_5xx_then_success() -> None:
    replies = [Reply(500, "boom"), Reply(502, "bad gateway"), Reply(503, "unavailable")]
    async with scripted_server([*replies, completion("ok")]) as (url, server):
        llm = client(url)
        assert (await llm.chat(REQUEST)).text == "ok"
        await llm.aclose()
    assert len(server.bodies) == 4


async def test_persistent_5xx_gives_up_with_the_servers_text() -> None:
    sleeps = SleepLog()
    async with scripted_server([Reply(503, "model is loading")] * 10) as (url, server):
        llm = client(url, sleeps, retry=RetryPolicy(max_retries=2, backoff_s=0.1))
        with pytest.raises(LLMTransportError) as info:
            await llm.chat(REQUEST)
        await llm.aclose()
    assert "after 3 attempts" in str(info.value) and "HTTP 503: model is loading" in str(info.value)
    assert len(server.bodies) == 3 and len(sleeps.delays) == 2


async def test_server_down_fails_after_retries(dead_port: int) -> None:
    sleeps = SleepLog()
    llm = client(f"http://127.0.0.1:{dead_port}/v1", sleeps, retry=RetryPolicy(max_retries=3))
    with pytest.raises(LLMTransportError) as info:
        await llm.chat(REQUEST)
    await llm.aclose()
    assert "ConnectError" in str(info.value) and "after 4 attempts" in str(info.value)
    assert info.value.hint and "base URL" in info.value.hint
    assert len(sleeps.delays) == 3


async def test_server_down_with_real_backoff_does_not_hang(dead_port: int) -> None:
    llm = OpenAIHTTP(
        "m", base_url=f"http://127.0.0.1:{dead_port}/v1", retry=RetryPolicy(3, backoff_s=0.01)
    )
    with pytest.raises(LLMTransportError):
        await llm.chat(REQUEST)
    await llm.aclose()


async def test_hung_server_times_out_and_fails_cleanly() -> None:
    replies = [Reply(delay_s=1.0), Reply(delay_s=1.0)]
    async with scripted_server(replies) as (url, server):
        llm = client(url, timeout_s=0.1, retry=RetryPolicy(max_retries=1))
        with pytest.raises(LLMTransportError) as info:
            await llm.chat(REQUEST)
        await llm.aclose()
    assert "ReadTimeout" in str(info.value)
    assert len(server.bodies) == 2


async def test_malformed_json_is_a_transport_error_quoting_the_server() -> None:
    async with scripted_server([Reply(200, "<html>proxy error</html>")]) as (url, server):
        llm = client(url)
        with pytest.raises(LLMTransportError, match="proxy error"):
            await llm.chat(REQUEST)
        await llm.aclose()
    assert len(server.bodies) == 1  # a garbage 200 is not retried


@pytest.mark.parametrize(
    "body",
    [{"object": "chat.completion"}, {"choices": []}, {"choices": [{"message": {}}]}],
)
async def test_missing_fields_are_a_transport_error(body: dict[str, object]) -> None:
    async with scripted_server([Reply(200, body)]) as (url, _):
        llm = client(url)
        with pytest.raises(LLMTransportError, match=r"choices\[0\]\.message\.content"):
            await llm.chat(REQUEST)
        await llm.aclose()


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 2048 tokens. However, you requested 3000 tokens",
        "prompt is 900 tokens but m's context window is 256 tokens",
    ],
)
async def test_context_errors_become_context_too_long(message: str) -> None:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    async with scripted_server([Reply(400, body)]) as (url, server):
        llm = client(url)
        with pytest.raises(ContextTooLong, match=message[:30]):
            await llm.chat(REQUEST)
        await llm.aclose()
    assert len(server.bodies) == 1


@pytest.mark.parametrize(("status", "hint"), [(401, "API key"), (404, "model name")])
async def test_client_errors_fail_at_once_with_a_hint(status: int, hint: str) -> None:
    async with scripted_server([Reply(status, "nope")] * 3) as (url, server):
        llm = client(url)
        with pytest.raises(LLMTransportError) as info:
            await llm.chat(REQUEST)
        await llm.aclose()
    assert f"HTTP {status}" in str(info.value) and hint in (info.value.hint or "")
    assert len(server.bodies) == 1


async def test_body_carries_sampling_stop_hints_and_the_api_key() -> None:
    request = ChatRequest(
        messages=(Message("system", "s"), Message("user", "u")),
        sampling=Sampling(temperature=0.7, top_p=0.9, max_tokens=33, seed=5),
        stop=("\n\n",),
        program_id="traj-1",
        last_turn=True,
        next_tool="run_test",
    )
    async with scripted_server([completion()]) as (url, server):
        llm = client(url, api_key="sk-test")
        await llm.chat(request)
        await llm.aclose()
    body = server.bodies[0]
    assert body["messages"] == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
    ]
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (
        0.7,
        0.9,
        33,
        5,
    )
    assert body["stop"] == ["\n\n"]
    assert (body["program_id"], body["last_turn"], body["next_tool"]) == (
        "traj-1",
        True,
        "run_test",
    )
    assert server.headers[0]["authorization"] == "Bearer sk-test"


def test_hints_are_not_sent_to_openai_itself() -> None:
    request = ChatRequest(messages=(Message("user", "u"),), program_id="p", next_tool="t")
    body = OpenAIHTTP("gpt-4o", api_key="k").request_body(request)
    assert "program_id" not in body and "next_tool" not in body
    forced = OpenAIHTTP("gpt-4o", api_key="k", send_hints=True).request_body(request)
    assert forced["program_id"] == "p"


async def test_usage_and_cost_come_from_the_reply_and_the_price_table() -> None:
    replies = [completion("a", usage=(1000, 500)), completion("b", finish="length")]
    prices = {"tiny-model": Price(input_per_mtok=1.0, output_per_mtok=2.0)}
    async with scripted_server(replies) as (url, _):
        llm = client(url, prices=prices)
        priced = await llm.chat(REQUEST)
        length = await llm.chat(REQUEST)
        await llm.aclose()
    assert (priced.usage.prompt_tokens, priced.usage.completion_tokens) == (1000, 500)
    assert priced.cost_usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    assert priced.model == "scripted-http"
    assert length.finish_reason == "length"


async def test_missing_usage_is_estimated_not_zero() -> None:
    async with scripted_server([completion("some answer", usage=None)]) as (url, _):
        llm = client(url)
        response = await llm.chat(REQUEST)
        await llm.aclose()
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


async def test_stop_string_left_in_by_a_server_is_trimmed() -> None:
    request = ChatRequest(messages=(Message("user", "u"),), stop=("STOP",))
    async with scripted_server([completion("answer STOP extra")]) as (url, _):
        llm = client(url)
        assert (await llm.chat(request)).text == "answer "
        await llm.aclose()


async def test_concurrency_limit_holds() -> None:
    async with scripted_server([Reply(200, completion().body, delay_s=0.05)] * 6) as (url, server):
        llm = client(url, max_concurrency=2)
        responses = await asyncio.gather(*(llm.chat(REQUEST) for _ in range(6)))
        await llm.aclose()
    assert len(responses) == 6
    assert server.max_in_flight <= 2
