"""Speculative sampling is exact: the output distribution equals the target's.

Tiny-vocabulary models (5 tokens, a sharpened head) make the joint distribution of the first
three generated tokens (125 outcomes) computable exactly from the target, and estimable from
4000 engine samples. A chi-square goodness-of-fit test must not reject the target's
distribution (p > 1e-3 at fixed seeds), and must reject the draft's own distribution
(p < 1e-12): the test can tell a wrong sampler from a right one.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest
import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from harness.llm.engine.config import EngineConfig, SpecConfig
from harness.llm.engine.draft import self_draft
from harness.llm.engine.engine import Engine
from harness.llm.engine.sampling import processed_probs
from harness.llm.engine.sequence import EngineRequest, SamplingParams
from harness.llm.engine.speculative import speculative_runner
from tests.llm.engine.conftest import noisy_copy

V = 5
N_TOKENS = 3
SAMPLES = 4000
PROMPT = (1, 3, 0, 2)


def _model(seed: int, layers: int) -> Any:
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)  # peaked, distinct next-token distributions
    model.generation_config = GenerationConfig(eos_token_id=None, pad_token_id=0)  # type: ignore[no-untyped-call]
    return model.eval()


def _exact(model: Any, params: SamplingParams) -> dict[tuple[int, ...], float]:
    """P(first N_TOKENS tokens) under `model` sampled one token at a time with `params`."""
    outcomes = list(itertools.product(range(V), repeat=N_TOKENS))
    with torch.no_grad():
        logits = model(torch.tensor([list(PROMPT) + list(o) for o in outcomes])).logits
    prob = torch.ones(len(outcomes), dtype=torch.float64)
    rows = torch.arange(len(outcomes))
    for j in range(N_TOKENS):
        p = processed_probs(logits[:, len(PROMPT) - 1 + j], params).double()
        prob *= p[rows, torch.tensor([o[j] for o in outcomes])]
    return dict(zip(outcomes, prob.tolist(), strict=True))


def chi_square_p(counts: Counter[tuple[int, ...]], expected: dict[tuple[int, ...], float]) -> float:
    """Goodness of fit; outcomes expected fewer than 5 times are pooled into one cell."""
    n = sum(counts.values())
    obs: list[float] = []
    exp: list[float] = []
    rest_obs = rest_exp = 0.0
    for outcome, p in expected.items():
        if p * n >= 5:
            obs.append(counts[outcome])
            exp.append(p * n)
        else:
            rest_obs += counts[outcome]
            rest_exp += p * n
    if rest_exp > 0:
        obs.append(rest_obs)
        exp.append(rest_exp)
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp, strict=True))
    df = torch.tensor((len(obs) - 1) / 2, dtype=torch.float64)
    return float(torch.special.gammaincc(df, torch.tensor(stat / 2, dtype=torch.float64)))


def _sample(target: Any, draft: Any, k: int, params: SamplingParams, seeded: bool) -> Counter:
    cfg = EngineConfig(
        block_size=4,
        num_blocks=2048,
        max_batched_tokens=4096,
        max_num_seqs=512,
        policy="none",
        max_model_len=64,
    )
    runner = speculative_runner(
        target, cfg, SpecConfig(k=k, adaptive=False), draft_model=draft, self_draft_layers=1
    )
    engine = Engine(runner, cfg, adapt_prefill_rate=False, draft_len=runner.policy.draft_len)
    torch.manual_seed(1234)
    for i in range(SAMPLES):
        p = SamplingParams(params.temperature, params.top_p, seed=i if seeded else None)
        engine.add_request(EngineRequest(PROMPT, max_tokens=N_TOKENS, sampling=p))
    counts = Counter(tuple(o.token_ids) for o in engine.run_until_done())
    stats = runner.stats()
    assert 0.3 < stats.acceptance_rate < 0.95  # both acceptance and rejection paths run
    assert stats.accepted > 0 and stats.drafted > stats.accepted
    return counts


@pytest.mark.parametrize(
    ("draft_kind", "k", "params", "seeded"),
    [
        ("separate", 1, SamplingParams(temperature=1.0), False),  # bonus tokens, lagging draft
        ("self", 2, SamplingParams(temperature=0.8, top_p=0.85), True),  # nucleus, seeds
    ],
)
def test_output_distribution_is_the_targets(
    draft_kind: str, k: int, params: SamplingParams, seeded: bool
) -> None:
    target = _model(0, layers=2 if draft_kind == "separate" else 3)
    draft = noisy_copy(target, 1.0) if draft_kind == "separate" else None
    p_target = _exact(target, params)
    p_draft = _exact(draft if draft is not None else self_draft(target, 1), params)
    counts = _sample(target, draft, k, params, seeded)
    assert sum(counts.values()) == SAMPLES
    assert chi_square_p(counts, p_target) > 1e-3
    assert chi_square_p(counts, p_draft) < 1e-12
