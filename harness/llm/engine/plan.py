"""What the scheduler hands the runner (a step's plan) and keeps per program (pure Python)."""

from __future__ import annotations

import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from harness.llm.engine.kv import CopyOp
from harness.llm.engine.sequence import Sequence


@dataclass
class Pin:
    """A finished turn's blocks held for the program's next turn."""

    program_id: str
    blocks: list[int]
    token_ids: list[int]
    num_computed: int
    tool: str | None
    created: float
    ttl: float
    program_arrival: float = 0.0
    program_rank: int = 0
    claimed: bool = False  # the next turn arrived: no expiry, released when it is admitted

    @property
    def expiry(self) -> float:
        return math.inf if self.claimed else self.created + self.ttl


@dataclass
class Program:
    first_arrival: float
    rank: int = 0
    last_finish: float | None = None
    last_tool: str | None = None
    last_tokens: list[int] = field(default_factory=list)
    last_computed: int = 0


@dataclass(frozen=True)
class ScheduledSeq:
    seq: Sequence
    start: int  # first position fed this step
    num_tokens: int
    sample: bool  # the chunk reaches the sequence's end, so its last logits are sampled
    # Speculative row: a decoding sequence whose pending tokens are fed with `draft` tokens
    # a draft model proposes this step (0: the target alone samples the next token). Its
    # blocks cover `start + num_tokens + draft` positions.
    spec: bool = False
    draft: int = 0


@dataclass(frozen=True)
class Accepted:
    """What a speculative row appends: `tokens` in order, and how many leading positions of
    the sequence have valid KV in every cache (target and draft) after the step."""

    tokens: tuple[int, ...]
    computed: int


@dataclass(frozen=True)
class SchedulerOutput:
    items: tuple[ScheduledSeq, ...]
    copy_ops: tuple[CopyOp, ...] = ()

    @property
    def num_tokens(self) -> int:
        return sum(it.num_tokens for it in self.items)


@dataclass
class SchedulerStats:
    prefill_tokens: int = 0
    recomputed_tokens: int = 0  # prefill tokens whose KV this program had computed before
    cached_tokens: int = 0  # prompt tokens served from the cache at admission
    decode_tokens: int = 0
    draft_tokens: int = 0  # drafted tokens scheduled for verification (speculative rows)
    preemptions: int = 0
    pins_created: int = 0
    pin_hits: int = 0  # next turns that found their pin alive
    pins_expired: int = 0
    pins_evicted: int = 0
    turns_after_pin: int = 0  # next turns of programs whose previous turn was pinned

    @property
    def pin_hit_rate(self) -> float:
        return self.pin_hits / self.turns_after_pin if self.turns_after_pin else 0.0


def common_prefix(a: Seq[int], b: Seq[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
