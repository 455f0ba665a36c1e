"""Token sampling over a batch of logits: greedy, temperature, top-p, per-request seeds."""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from harness.llm.engine.sequence import SamplingParams


def _top_p_sample(probs: torch.Tensor, top_p: float, generator: torch.Generator | None) -> int:
    sorted_p, order = probs.sort(descending=True)
    cum = sorted_p.cumsum(-1)
    sorted_p = sorted_p.masked_fill(cum - sorted_p > top_p, 0.0)
    pick = torch.multinomial(sorted_p, 1, generator=generator)
    return int(order[pick].item())


def sample(
    logits: torch.Tensor,
    params: Seq[SamplingParams],
    generators: Seq[torch.Generator | None],
) -> list[int]:
    """One token per row of `logits` ([N, vocab]). Greedy rows use argmax in float32."""
    logits = logits.float()
    greedy = logits.argmax(dim=-1).tolist()
    if all(p.greedy for p in params):
        return [int(t) for t in greedy]
    out = [int(t) for t in greedy]
    for i, (p, gen) in enumerate(zip(params, generators, strict=True)):
        if p.greedy:
            continue
        probs = torch.softmax(logits[i] / p.temperature, dim=-1)
        out[i] = _top_p_sample(probs, p.top_p, gen)
    return out
