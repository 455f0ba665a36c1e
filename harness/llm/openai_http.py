"""Chat over an OpenAI-compatible HTTP API (vLLM, SGLang, llama.cpp, OpenAI, `harness serve`).

Retries 429 / 5xx / connection errors with exponential backoff and jitter (honouring
Retry-After), limits concurrency, and prices each call from a table that is passed in.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from harness.errors import ContextTooLong, LLMTransportError
from harness.llm.accounting import (
    PriceTable,
    cost_usd,
    estimate_prompt_tokens,
    estimate_tokens,
)
from harness.llm.base import ChatRequest, ChatResponse, FinishReason, Usage
from harness.llm.stops import trim_at_stop

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_SHOWN = 500  # characters of a server's reply quoted in an error
_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window")


@dataclass(frozen=True)
class RetryPolicy:
    """Waits `backoff_s * 2**attempt` (capped, ± `jitter` of it) unless Retry-After says."""

    max_retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    jitter: float = 0.25
    max_retry_after_s: float = 120.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return base * (1 + self.jitter * (2 * rng.random() - 1))


def retry_after_s(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class OpenAIHTTP:
    """An `LLM` over `POST {base_url}/chat/completions`. Safe to call concurrently."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        prices: PriceTable | None = None,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        max_concurrency: int = 16,
        retry: RetryPolicy | None = None,
        send_hints: bool | None = None,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._model = model
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._prices = prices or {}
        self._retry = retry or RetryPolicy()
        # OpenAI itself rejects unknown body fields; servers built on vLLM/SGLang/ours accept them.
        self._send_hints = (
            send_hints
            if send_hints is not None
            else urlsplit(base_url).hostname != "api.openai.com"
        )
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_concurrency),
        )
        self._limit = asyncio.Semaphore(max_concurrency)
        self._sleep = sleep
        self._rng = rng or random.Random()

    @property
    def model_name(self) -> str:
        return self._model

    def speculation_stats(self) -> None:
        return None  # the server's decoding is not ours to count

    def request_body(self, request: ChatRequest) -> dict[str, Any]:
        s = request.sampling
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
        }
        if s.seed is not None:
            body["seed"] = s.seed
        if request.stop:
            body["stop"] = list(request.stop)
        if self._send_hints:
            if request.program_id is not None:
                body["program_id"] = request.program_id
            if request.last_turn:
                body["last_turn"] = True
            if request.next_tool is not None:
                body["next_tool"] = request.next_tool
        return body

    async def chat(self, request: ChatRequest) -> ChatResponse:
        start = time.perf_counter()
        body = self.request_body(request)
        async with self._limit:
            reply = await self._post_with_retries(body)
        return self._parse(reply, request, start)

    async def _post_with_retries(self, body: dict[str, Any]) -> httpx.Response:
        policy = self._retry
        last = ""
        for attempt in range(policy.max_retries + 1):
            delay = policy.delay(attempt, self._rng)
            try:
                reply = await self._client.post(self._url, json=body, headers=self._headers)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            else:
                if reply.status_code < 300:
                    return reply
                if reply.status_code != 429 and reply.status_code < 500:
                    raise self._client_error(reply)
                last = f"HTTP {reply.status_code}: {reply.text[:_SHOWN]}"
                waited = retry_after_s(reply.headers.get("retry-after"))
                if waited is not None:
                    delay = min(waited, policy.max_retry_after_s)
            if attempt < policy.max_retries:
                await self._sleep(delay)
        raise LLMTransportError(
            f"{self._url} failed after {policy.max_retries + 1} attempts; last error: {last}",
            hint="is the server up and the base URL right (it usually ends in /v1)?",
        )

    def _client_error(self, reply: httpx.Response) -> Exception:
        text = reply.text[:_SHOWN]
        if reply.status_code == 400 and any(m in text.lower() for m in _CONTEXT_MARKERS):
            return ContextTooLong(f"{self._model}: {_error_message(reply)}")
        hints = {
            401: "check the API key (OPENAI_API_KEY)",
            403: "check the API key and its access to this model",
            404: "check the model name and the base URL (it usually ends in /v1)",
        }
        return LLMTransportError(
            f"HTTP {reply.status_code} from {self._url}: {text}",
            hint=hints.get(reply.status_code),
        )

    def _parse(self, reply: httpx.Response, request: ChatRequest, start: float) -> ChatResponse:
        try:
            data = reply.json()
            choice = data["choices"][0]
            content = choice["message"]["content"] or ""
            raw_finish = choice.get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise LLMTransportError(
                f"malformed reply from {self._url} (expected JSON with "
                f"choices[0].message.content): {reply.text[:_SHOWN]!r}"
            ) from e
        if not isinstance(content, str):
            raise LLMTransportError(f"reply from {self._url} has non-text content: {content!r}")
        text, _ = trim_at_stop(content, request.stop)  # some servers leave the stop string in
        finish: FinishReason = "length" if raw_finish == "length" else "stop"
        usage = _usage(data.get("usage"), request, text)
        return ChatResponse(
            text=text,
            finish_reason=finish,
            usage=usage,
            latency_s=time.perf_counter() - start,
            cost_usd=cost_usd(self._prices, self._model, usage),
            model=str(data.get("model") or self._model),
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _usage(raw: object, request: ChatRequest, text: str) -> Usage:
    """Usage as reported (whole numbers, `12.0` too); estimated (high) when a server leaves it
    out or sends something else. Its plausibility is checked where it is spent (budget.py)."""
    if isinstance(raw, dict):
        prompt, completion = _count(raw.get("prompt_tokens")), _count(raw.get("completion_tokens"))
        if prompt is not None and completion is not None:
            return Usage(prompt, completion)
    return Usage(estimate_prompt_tokens(request), estimate_tokens(text))


def _count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _error_message(reply: httpx.Response) -> str:
    try:
        message = reply.json()["error"]["message"]
        return str(message)
    except (ValueError, KeyError, TypeError):
        return reply.text[:_SHOWN]
