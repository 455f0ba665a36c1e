"""Engine settings: one frozen dataclass shared by the scheduler, block manager and runner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.errors import ConfigError

Policy = Literal["none", "lru", "ttl"]
POLICIES: tuple[Policy, ...] = ("none", "lru", "ttl")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine batches, caches and pins.

    `policy`: `none` recomputes every prompt; `lru` keeps a hash-chained prefix cache with LRU
    eviction (vLLM-style); `ttl` adds Continuum's per-program pins and program-level FCFS.
    """

    block_size: int = 16
    num_blocks: int = 1024  # KV blocks on the device (the runner adds one scratch block)
    num_cpu_blocks: int = 0  # offload tier for expiring pins; 0 turns offload off
    max_num_seqs: int = 64  # sequences in one batch
    max_batched_tokens: int = 2048  # tokens per step; longer prompts are prefilled in chunks
    max_model_len: int = 32768
    # Admit a request only if every running one can still reach max_tokens (no preemption
    # in steady state); off: admit on the prompt alone and preempt under pressure (vLLM-like).
    reserve_decode: bool = True
    policy: Policy = "ttl"
    program_fcfs: bool | None = None  # None: on exactly when policy == "ttl"
    max_programs: int = 4096  # program records kept (first arrival, last turn) at most
    # TTL policy (see ttl.py for the math).
    default_ttl_s: float = 2.0  # pin length before a tool has any observed gap (Continuum's 2 s)
    max_ttl_s: float = 120.0
    min_ttl_s: float = 0.5
    gap_window: int = 64  # recent gaps kept per tool
    memory_price: float = 0.25  # engine-seconds charged per (whole cache x second) a pin holds
    prefill_tok_per_s: float = 20000.0  # prior for the recompute cost; the engine refines it
    restore_tok_per_s: float = 1_000_000.0  # CPU-tier copy-back speed (~28 GB/s at 28 KB/token)
    tool_priors: tuple[tuple[str, float], ...] = ()  # (tool, typical gap in s) before any data
    # Runner.
    cuda_graphs: bool = True  # capture pure-decode steps on CUDA
    graph_max_batch: int = 64
    compile_decode: bool = False  # torch.compile the decode step (graphs then capture it)
    static_decode: bool = False  # pad decode steps to graph buckets even without graphs

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown KV policy {self.policy!r}", hint=f"one of {POLICIES}")
        for name in ("block_size", "num_blocks", "max_num_seqs", "max_batched_tokens"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"engine {name} must be positive")
        if self.num_cpu_blocks < 0:
            raise ConfigError("engine num_cpu_blocks must be >= 0")
        if self.min_ttl_s > self.max_ttl_s:
            raise ConfigError("engine min_ttl_s must not exceed max_ttl_s")

    @property
    def prefix_caching(self) -> bool:
        return self.policy != "none"

    @property
    def pins(self) -> bool:
        return self.policy == "ttl"

    @property
    def use_program_fcfs(self) -> bool:
        return self.policy == "ttl" if self.program_fcfs is None else self.program_fcfs

    @property
    def offload(self) -> bool:
        return self.pins and self.num_cpu_blocks > 0


Fallback = Literal["target", "resample"]
FALLBACKS: tuple[Fallback, ...] = ("target", "resample")


@dataclass(frozen=True)
class SpecConfig:
    """Draft/target decoding (docs/engine.md, "Speculative decoding").

    Token level (`conformal_alpha` None): each round a decoding sequence drafts up to `k`
    tokens (the number adapts to its acceptance rate unless `adaptive` is off) and the target
    verifies them with exact rejection sampling. Step level (`conformal_alpha` set): the draft
    writes a step (up to a delimiter token or `step_max_tokens`), the target scores it and a
    split-conformal threshold accepts or rejects it; a rejected step is written by the target
    (token-level speculation keeps that exact), or first redrawn by the draft up to
    `resample_attempts` times (`fallback="resample"`).
    """

    k: int = 4  # most draft tokens per round (token level), and the fixed k when not adaptive
    adaptive: bool = True
    cost_ratio: float = 0.2  # draft / target time per token, for choosing k (see draft.py)
    conformal_alpha: float | None = None
    step_max_tokens: int = 32
    delimiter_ids: frozenset[int] = frozenset()  # tokens that end a step (decoded "\n" etc.)
    calibration_window: int = 512
    fallback: Fallback = "target"
    resample_attempts: int = 2
    resample_temperature: float = 1.0  # draft temperature of redraws for greedy requests

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError("speculation needs k >= 1 draft tokens per round")
        if self.cost_ratio < 0:
            raise ConfigError("speculation cost_ratio must be >= 0")
        if self.conformal_alpha is not None and not 0.0 < self.conformal_alpha <= 1.0:
            raise ConfigError(f"conformal alpha must be in (0, 1], got {self.conformal_alpha}")
        if self.step_max_tokens < 1 or self.calibration_window < 1:
            raise ConfigError("step_max_tokens and calibration_window must be positive")
        if self.fallback not in FALLBACKS:
            raise ConfigError(f"unknown rejection fallback {self.fallback!r}", hint=f"{FALLBACKS}")
        if self.resample_attempts < 0:
            raise ConfigError("resample_attempts must be >= 0")

    @property
    def step_level(self) -> bool:
        return self.conformal_alpha is not None
