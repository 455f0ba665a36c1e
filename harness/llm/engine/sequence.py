"""Per-request state the scheduler and block manager share (pure Python, no torch)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Protocol


class SeqState(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 means greedy; `seed` makes one request's draws independent of batching."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


class StopChecker(Protocol):
    """Stop strings over one sequence's output, fed each step's new tokens once, in order."""

    def feed(self, tokens: Seq[int]) -> int | None:
        """Index in `tokens` of the token that completes a stop string, or None."""
        ...


StopFn = Callable[[], StopChecker]  # a fresh checker for each sequence of a request


@dataclass(frozen=True)
class EngineRequest:
    """One model call: prompt token ids plus the program hints of `harness.llm.base.ChatRequest`."""

    prompt_ids: tuple[int, ...]
    max_tokens: int = 256
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_token_ids: frozenset[int] = frozenset()
    stop_fn: StopFn | None = None  # stop strings (the client builds the checker)
    program_id: str | None = None
    last_turn: bool = False
    next_tool: str | None = None
    ignore_eos: bool = False


@dataclass
class Sequence:
    """A request being served. `num_computed` tokens have their KV written in `block_table`."""

    seq_id: int
    request: EngineRequest
    arrival: float
    program_arrival: float  # first arrival of the program (program-level FCFS key)
    token_ids: list[int]
    program_rank: int = 0  # id of the program's first request: breaks arrival-time ties
    state: SeqState = SeqState.WAITING
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)  # chain hashes of full, computed blocks
    num_computed: int = 0
    known_len: int = 0  # tokens computed before (earlier turn / before preemption): recompute
    num_cached: int = 0  # prompt tokens served from the cache at the first admission
    pin_hit: bool = False
    preemptions: int = 0
    finish_reason: str | None = None
    first_token_time: float | None = None
    finish_time: float | None = None
    stop: StopChecker | None = None

    def __post_init__(self) -> None:
        if self.request.stop_fn is not None:
            self.stop = self.request.stop_fn()

    @property
    def prompt_len(self) -> int:
        return len(self.request.prompt_ids)

    @property
    def num_generated(self) -> int:
        return len(self.token_ids) - len(self.request.prompt_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def generated(self) -> list[int]:
        return self.token_ids[self.prompt_len :]

    @property
    def program_id(self) -> str | None:
        return self.request.program_id

    @property
    def in_prefill(self) -> bool:
        return self.num_tokens - self.num_computed > 1
