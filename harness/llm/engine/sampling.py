"""Token sampling over a batch of logits: greedy, temperature, top-p, per-request seeds; and
exact speculative rejection sampling (Leviathan et al. 2023, Chen et al. 2023)."""

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


def processed_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution `sample` draws from, for every row of `logits` ([..., vocab]):
    softmax at the temperature, cut to the top-p nucleus (the same rule as `sample`) and
    renormalised; one-hot at the argmax for greedy params."""
    logits = logits.float()
    if params.greedy:
        out = torch.zeros_like(logits)
        return out.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    cum = sorted_p.cumsum(-1)
    sorted_p = sorted_p.masked_fill(cum - sorted_p > params.top_p, 0.0)
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return kept / kept.sum(-1, keepdim=True)


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token id per row of `probs` ([N, vocab], rows need not sum to 1), on the device."""
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def rejection_sample(
    p: torch.Tensor,
    q: torch.Tensor,
    drafts: torch.Tensor,
    generator: torch.Generator | None,
) -> tuple[int, int]:
    """Verify `k` drafted tokens: (number accepted, the next token).

    `p` [k + 1, vocab]: the target's distribution at each draft position and one past it;
    `q` [k, vocab]: the draft's distribution each draft was drawn from; `drafts` [k]. Draft i
    is accepted with probability min(1, p_i(x) / q_i(x)) while all before it were; at the
    first rejection the next token is drawn from the residual max(0, p_i - q_i) renormalised,
    and after k acceptances from p_k (the bonus token). The output is distributed exactly as
    tokens drawn from p one at a time.
    """
    k = int(drafts.shape[0])
    m = k
    if k:
        idx = torch.arange(k, device=p.device)
        pd, qd = p[idx, drafts], q[idx, drafts]
        u = torch.rand(k, generator=generator, device=p.device, dtype=pd.dtype)
        rejected = (u * qd >= pd).nonzero()  # accept iff u < p / q  (q > 0: x was drawn from q)
        if len(rejected):
            m = int(rejected[0, 0].item())
    if m == k:
        return m, int(draw(p[k : k + 1], generator)[0].item())
    residual = (p[m] - q[m]).clamp_min(0.0)
    if float(residual.sum()) <= 0.0:  # p == q up to rounding: a rejection had ~0 probability
        residual = p[m]
    return m, int(draw(residual[None], generator)[0].item())
