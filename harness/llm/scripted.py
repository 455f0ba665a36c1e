"""A scripted model: canned answers from a list, a JSON/YAML file or a function.

The solve pipeline's end-to-end tests and benchmarks run on it. It keeps the backends' contract
(stop strings, max_tokens, usage, context window) with a pseudo-tokenizer of 4 characters a
token, and can wait a fixed time per call to stand in for a real model's latency.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, ContextTooLong, LLMError, ModelSpecError
from harness.llm.base import ChatRequest, ChatResponse, FinishReason, Usage
from harness.llm.stops import trim_at_stop

CHARS_PER_TOKEN = 4


def pseudo_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class ScriptedReply:
    text: str
    finish_reason: FinishReason | None = None  # None: from stop strings and max_tokens


Responder = Callable[[ChatRequest], str]
Script = Sequence[str | ScriptedReply] | Responder


class ScriptedLLM:
    """Answers from `script` in call order (or by calling it); raises LLMError when it runs out.

    `requests` records every request received, in order, for tests to inspect.
    """

    def __init__(
        self,
        script: Script,
        *,
        latency_s: float = 0.0,
        name: str = "scripted",
        context_window: int | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if callable(script):
            self._responder: Responder | None = script
            self._replies: tuple[ScriptedReply, ...] = ()
        else:
            self._responder = None
            self._replies = tuple(
                r if isinstance(r, ScriptedReply) else ScriptedReply(r) for r in script
            )
        self.latency_s = latency_s
        self.context_window = context_window
        self.requests: list[ChatRequest] = []
        self._name = name
        self._sleep = sleep
        self._closed = False

    @classmethod
    def from_file(cls, path: Path, **kwargs: Any) -> ScriptedLLM:
        """Read a list of replies (strings or {text, finish_reason}), or a mapping with
        `responses` and optionally `latency_s`, from JSON or YAML; or, from a `.py` file, a
        `respond(request) -> str` function (and optionally `LATENCY_S`), for replies that
        depend on the request, as parallel trajectories and resumed runs need."""
        import yaml  # JSON is a subset of YAML

        if path.suffix == ".py":
            return cls._from_python(path, **kwargs)

        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError as e:
            raise ModelSpecError(f"script file {path} does not exist") from e
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read script {path}: {e}") from e
        if isinstance(raw, dict):
            kwargs.setdefault("latency_s", float(raw.get("latency_s", 0.0)))
            raw = raw.get("responses")
        if not isinstance(raw, list):
            raise ConfigError(
                f"script {path} must hold a list of responses",
                hint='e.g. ["first answer", {"text": "second", "finish_reason": "length"}]',
            )
        kwargs.setdefault("name", f"script:{path}")
        return cls([_reply(item, path, i) for i, item in enumerate(raw)], **kwargs)

    @classmethod
    def _from_python(cls, path: Path, **kwargs: Any) -> ScriptedLLM:
        import importlib.util

        if not path.is_file():
            raise ModelSpecError(f"script file {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"harness_script_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"cannot load script {path}")
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:  # the user's code: report what broke, with the file named
            raise ConfigError(f"script {path} failed to load: {type(e).__name__}: {e}") from e
        respond = getattr(module, "respond", None)
        if not callable(respond):
            raise ConfigError(f"script {path} defines no respond(request) function")
        kwargs.setdefault("latency_s", float(getattr(module, "LATENCY_S", 0.0)))
        kwargs.setdefault("name", f"script:{path}")
        return cls(respond, **kwargs)

    @property
    def model_name(self) -> str:
        return self._name

    def speculation_stats(self) -> None:
        return None  # canned answers: nothing is decoded

    @property
    def remaining(self) -> int | None:
        """Replies not yet given (None for a function script)."""
        return None if self._responder else len(self._replies) - len(self.requests)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        if self._closed:
            raise LLMError(f"{self._name} is closed")
        start = time.perf_counter()
        prompt_tokens = sum(pseudo_tokens(m.content) for m in request.messages)
        if self.context_window is not None and prompt_tokens >= self.context_window:
            raise ContextTooLong(
                f"prompt is {prompt_tokens} tokens but {self._name}'s context window is "
                f"{self.context_window} tokens"
            )
        # Take the reply before waiting so concurrent callers get replies in call order.
        reply = self._next(request)
        if self.latency_s > 0:
            await self._sleep(self.latency_s)
        text, _ = trim_at_stop(reply.text, request.stop)
        limit = request.sampling.max_tokens * CHARS_PER_TOKEN
        finish: FinishReason = "stop"
        if len(text) > limit:
            text, finish = text[:limit], "length"
        return ChatResponse(
            text=text,
            finish_reason=reply.finish_reason or finish,
            usage=Usage(prompt_tokens, pseudo_tokens(text)),
            latency_s=time.perf_counter() - start,
            model=self._name,
        )

    def _next(self, request: ChatRequest) -> ScriptedReply:
        index = len(self.requests)
        self.requests.append(request)
        if self._responder is not None:
            return ScriptedReply(self._responder(request))
        if index >= len(self._replies):
            raise LLMError(
                f"scripted model {self._name} ran out of responses after {len(self._replies)} "
                "calls",
                hint="add responses to the script, or check why the agent makes extra calls",
            )
        return self._replies[index]

    async def aclose(self) -> None:
        self._closed = True


def _reply(item: object, path: Path, index: int) -> ScriptedReply:
    if isinstance(item, str):
        return ScriptedReply(item)
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        finish = item.get("finish_reason")
        if finish in (None, "stop", "length"):
            return ScriptedReply(item["text"], finish)
    raise ConfigError(
        f"script {path}: response {index} is {item!r}",
        hint='each response is a string or {"text": ..., "finish_reason": "stop"|"length"}',
    )
