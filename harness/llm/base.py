"""The chat protocol every backend implements, and the request/response types.

Agent code talks only to `LLM`. Scheduling hints (`program_id`, `last_turn`, `next_tool`)
let the in-process engine keep a trajectory's KV cache across the tool call that follows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from harness.llm.engine.spec_policy import SpecStats

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; temperature 0 means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = None


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    sampling: Sampling = field(default_factory=Sampling)
    stop: tuple[str, ...] = ()
    # Scheduling hints for the engine (ignored by backends that cannot use them).
    program_id: str | None = None  # the trajectory this call belongs to
    last_turn: bool = False  # True when no further call of this program follows
    next_tool: str | None = None  # the tool call expected after this turn, e.g. "run_test"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@dataclass(frozen=True)
class ChatResponse:
    text: str
    finish_reason: FinishReason
    usage: Usage
    latency_s: float
    cost_usd: float = 0.0
    model: str = ""


@runtime_checkable
class LLM(Protocol):
    """An async chat model. Implementations must be safe to call concurrently."""

    @property
    def model_name(self) -> str: ...

    async def chat(self, request: ChatRequest) -> ChatResponse: ...

    def speculation_stats(self) -> SpecStats | None:
        """The draft/target counters so far of the engine behind this model, or None when it
        does not speculate (API models never do). A wrapper returns its inner model's."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class TextDelta:
    """A piece of a streamed answer. A stream ends with the full `ChatResponse`."""

    text: str


@runtime_checkable
class StreamingLLM(LLM, Protocol):
    """An LLM that can also stream: text deltas as they decode, then the final response.

    The deltas joined equal the final response's text. Closing the iterator early cancels
    the generation.
    """

    def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | ChatResponse]: ...
