"""Shared parts of the speculative-decoding benchmarks: a controlled draft/target pair, engines
that share one target runner (one KV cache, one set of CUDA graphs), timed greedy runs.

The controlled pair: in the target, every decoder layer from `L` on has its output
projections (attention `o_proj`, MLP `down_proj`) scaled by `eps`, so those layers add
`eps`-small updates to the residual stream; the draft is the target's first `L` layers plus
its final norm and head (the self-draft, or a separate model sharing those weights). Full
compute either way; `eps` tunes how often the two agree.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from harness.llm.engine.config import EngineConfig, SpecConfig
from harness.llm.engine.draft import self_draft
from harness.llm.engine.engine import Engine
from harness.llm.engine.runner import ModelRunner
from harness.llm.engine.sequence import EngineRequest
from harness.llm.engine.spec_policy import SpecPolicy, StepPolicy, TokenPolicy
from harness.llm.engine.speculative import SpeculativeRunner


class ScaledLayers:
    """Scales the output projections of layers >= `keep` to `eps` times their original."""

    def __init__(self, model: Any, keep: int) -> None:
        self.weights = [
            w
            for layer in model.model.layers[keep:]
            for w in (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight)
        ]
        self.original = [w.detach().clone() for w in self.weights]
        self.eps = 1.0

    @torch.no_grad()
    def set(self, eps: float) -> None:
        for w, w0 in zip(self.weights, self.original, strict=True):
            w.copy_(w0 * eps)  # from the originals: no rounding drift across settings
        self.eps = eps


def shared_weight_draft(model: Any, layers: int) -> Any:
    """A separate draft model object (its own KV cache in the engine) whose weights ARE the
    target's embedding, first `layers` layers, final norm and head (no extra memory)."""
    cfg = type(model.config).from_dict(model.config.to_dict())
    cfg.num_hidden_layers = layers
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:layers]
    with torch.device("meta"):
        draft = type(model)(cfg)
    draft.model.embed_tokens = model.model.embed_tokens
    draft.model.layers = torch.nn.ModuleList(list(model.model.layers)[:layers])
    draft.model.norm = model.model.norm
    draft.model.rotary_emb = model.model.rotary_emb
    draft.lm_head = model.lm_head
    draft.generation_config = model.generation_config
    return draft.eval()


@dataclass
class Runners:
    """One target runner and its drafts, reused by every engine of a benchmark."""

    target: ModelRunner
    self_draft: ModelRunner
    separate_draft: ModelRunner | None
    config: EngineConfig

    @property
    def warmup_s(self) -> float:
        """One-time costs (graph captures) of every runner so far."""
        extra = self.separate_draft.warmup_s if self.separate_draft else 0.0
        return self.target.warmup_s + self.self_draft.warmup_s + extra

    def timed(
        self,
        policy: SpecPolicy | None,
        prompts: Sequence[Sequence[int]],
        new_tokens: int,
        *,
        separate: bool = False,
    ) -> Run:
        """A timed greedy run on a fresh engine, minus the graph captures inside it."""
        warm = self.warmup_s
        engine = self.engine(policy, separate=separate)
        run = timed(engine, prompts, new_tokens, self.target.device)
        acc = policy.stats().acceptance_rate if policy is not None else None
        seconds = max(1e-9, run.seconds - (self.warmup_s - warm))
        return Run(seconds, run.tokens, run.outputs, acc)

    def engine(self, policy: SpecPolicy | None = None, separate: bool = False) -> Engine:
        if policy is None:
            return Engine(self.target, self.config, adapt_prefill_rate=False)
        draft = self.separate_draft if separate else self.self_draft
        if draft is None:
            raise ValueError("no separate draft was built")
        runner = SpeculativeRunner(self.target, draft, policy)
        return Engine(runner, self.config, adapt_prefill_rate=False, draft_len=policy.draft_len)


def build_runners(model: Any, config: EngineConfig, layers: int, separate: bool) -> Runners:
    target = ModelRunner(model, config)
    own = ModelRunner(self_draft(model, layers), config, shared_kv=target.kv[:layers])
    other = ModelRunner(shared_weight_draft(model, layers), config) if separate else None
    return Runners(target, own, other, config)


def token_policy(k: int, adaptive: bool, cost_ratio: float) -> TokenPolicy:
    return TokenPolicy(SpecConfig(k=k, adaptive=adaptive, cost_ratio=cost_ratio))


def step_policy(alpha: float, step_tokens: int, k: int, cost_ratio: float) -> StepPolicy:
    return StepPolicy(
        SpecConfig(
            k=k,
            cost_ratio=cost_ratio,
            conformal_alpha=alpha,
            step_max_tokens=step_tokens,
            calibration_window=512,
        )
    )


@dataclass(frozen=True)
class Run:
    seconds: float
    tokens: int
    outputs: tuple[tuple[int, ...], ...]
    acceptance: float | None = None  # token-level acceptance rate of a speculative run

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    engine: Engine, prompts: Sequence[Sequence[int]], new_tokens: int, device: torch.device
) -> Run:
    """Greedy generation of `new_tokens` per prompt, all submitted at once; wall time."""
    ids = [
        engine.add_request(EngineRequest(tuple(p), max_tokens=new_tokens, ignore_eos=True))
        for p in prompts
    ]
    sync(device)
    t0 = time.perf_counter()
    done = {o.request_id: o for o in engine.run_until_done()}
    sync(device)
    dt = time.perf_counter() - t0
    outs = tuple(done[i].token_ids for i in ids)
    return Run(dt, sum(len(o) for o in outs), outs)


def random_prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (length,), generator=g).tolist() for _ in range(n)]


def calibrate_eps(
    scale: ScaledLayers,
    acceptance_of: Callable[[], float],
    target: float,
    lo: float = 1e-4,
    hi: float = 1.0,
    iters: int = 8,
) -> tuple[float, float]:
    """Bisect log(eps) for a measured acceptance rate near `target` (acceptance falls as eps
    grows). Returns (eps, acceptance measured at it)."""
    best = (hi, -1.0)
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        scale.set(mid)
        acc = acceptance_of()
        if abs(acc - target) < abs(best[1] - target):
            best = (mid, acc)
        if acc > target:
            lo = mid
        else:
            hi = mid
    scale.set(best[0])
    return best


def prefix_agreement(outs: Sequence[Sequence[int]], refs: Sequence[Sequence[int]]) -> float:
    """Mean share of each output that matches its reference before the first difference."""
    shares = []
    for out, ref in zip(outs, refs, strict=True):
        n = 0
        while n < min(len(out), len(ref)) and out[n] == ref[n]:
            n += 1
        shares.append(n / max(1, len(ref)))
    return sum(shares) / max(1, len(shares))


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0
