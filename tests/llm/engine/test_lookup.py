"""Lookup (suffix) drafts in the engine: exact like every drafter. Greedy output equals
transformers' `generate` token for token; sampled output is distributed as the target's,
with the draft a point mass (q one-hot at the drafted token); and the books stay exact."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch

from harness.llm.engine import sampling
from harness.llm.engine.config import EngineConfig, SpecConfig
from harness.llm.engine.engine import Engine, RequestOutput
from harness.llm.engine.sampling import Streams, VerifySpec, processed_probs, verify
from harness.llm.engine.sequence import EngineRequest, SamplingParams
from harness.llm.engine.speculative import SpeculativeRunner, speculative_runner
from harness.llm.engine.tables import Staging
from tests.llm.engine.conftest import VOCAB, greedy_reference, tiny_model
from tests.llm.engine.test_spec_sampling import N_TOKENS, PROMPT, _exact, _model, chi_square_p


def _engine(model: Any, k: int = 6, adaptive: bool = True, **kw: Any) -> Engine:
    cfg = EngineConfig(**kw)
    runner = speculative_runner(
        model, cfg, SpecConfig(k=k, adaptive=adaptive, cost_ratio=0.05), lookup=True
    )
    return Engine(runner, cfg, adapt_prefill_rate=False, draft_len=runner.policy.draft_len)


def _run(engine: Engine, prompts: list[list[int]], n: int, **kw: Any) -> list[RequestOutput]:
    ids = [engine.add_request(EngineRequest(tuple(p), max_tokens=n, **kw)) for p in prompts]
    done = {o.request_id: o for o in engine.run_until_done()}
    return [done[i] for i in ids]


def _prompts(seed: int, lengths: list[int]) -> list[list[int]]:
    """Random prompts with a repeated stretch (what lookup drafts feed on)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        p = torch.randint(0, VOCAB, (n,), generator=g).tolist()
        out.append(p + p[: n // 2] + p)
    return out


@pytest.mark.parametrize("static", [False, True])
def test_greedy_equals_generate(static: bool) -> None:
    model = tiny_model(layers=2)
    prompts = _prompts(3, [6, 20, 33, 9])
    engine = _engine(
        model,
        block_size=4,
        num_blocks=256,
        max_batched_tokens=40,
        policy="lru",
        static_decode=static,
    )
    outs = _run(engine, prompts, 40)
    for p, o in zip(prompts, outs, strict=True):
        assert list(o.token_ids) == greedy_reference(model, p, 40)
    runner = engine.runner
    assert isinstance(runner, SpeculativeRunner) and runner.draft is None
    stats = runner.stats()
    # A random model's greedy text loops: lookups find it and most drafts pass.
    assert stats.drafted > 0 and 0.3 < stats.acceptance_rate <= 1.0
    assert stats.draft_tokens + stats.target_tokens == sum(len(o.token_ids) for o in outs)
    assert runner.draft_forwards == 0  # no model drafts
    assert engine.scheduler.bm.num_free == 256


def test_greedy_under_preemption_and_stops() -> None:
    model = tiny_model(layers=2)
    prompts = _prompts(5, [12, 16, 20])
    ref = [greedy_reference(model, p, 48) for p in prompts]
    engine = _engine(
        model,
        block_size=4,
        num_blocks=40,
        max_batched_tokens=64,
        policy="ttl",
        reserve_decode=False,
    )
    outs = _run(engine, prompts, 48)
    assert engine.scheduler.stats.preemptions > 0
    assert [list(o.token_ids) for o in outs] == ref
    # A stop token inside accepted drafts ends the output right there.
    stop = ref[0][30]
    cut = ref[0][: ref[0].index(stop) + 1]
    (out,) = _run(
        _engine(model, block_size=4, num_blocks=64),
        prompts[:1],
        48,
        stop_token_ids=frozenset({stop}),
    )
    assert list(out.token_ids) == cut and out.finish_reason == "stop"


def test_point_mass_verification_is_exact_at_one_position() -> None:
    """20000 rows of one distribution p and the draft x: accept x w.p. p(x), else draw from
    p without x. The first token must be distributed as p; q given as an explicit one-hot
    distribution gives the same tokens for the same random numbers."""
    torch.manual_seed(0)
    logits = torch.randn(6) * 1.5
    params = SamplingParams(temperature=0.9)
    p = processed_probs(logits, params)
    x = int(p.argsort()[-2])  # a likely, but not the likeliest, draft
    n = 20000
    streams = Streams(key=123)

    def run(q: torch.Tensor | None) -> list[int]:
        keys, counters = [], []
        for i in range(n):
            key, c = streams.take(i, seed=i, n=2)
            keys += [key, key]
            counters += [c, c + 1]
        spec = VerifySpec(
            [(x,)] * n, [2 * i for i in range(n)], [params] * n, [q] * n, keys, counters
        )
        st = Staging(torch.device("cpu"))
        spec.stage(st)
        spec.bind(st.send())
        out = verify(logits.repeat(2 * n, 1), spec).tolist()
        for i in range(n):
            streams.release(i)
        return [x if out[i] else out[n + i] for i in range(n)]

    first = run(None)
    one_hot = torch.zeros(1, 6)
    one_hot[0, x] = 1.0
    assert run(one_hot) == first
    counts = Counter((t,) for t in first)
    expected = {(t,): float(p[t]) for t in range(6)}
    assert chi_square_p(counts, expected) > 1e-3
    assert chi_square_p(counts, {(t,): 1.0 / 6 for t in range(6)}) < 1e-12


def _sample_lookup(target: Any, params: SamplingParams) -> tuple[Counter, Any]:
    cfg = EngineConfig(
        block_size=4,
        num_blocks=2048,
        max_batched_tokens=4096,
        max_num_seqs=512,
        policy="none",
        max_model_len=64,
    )
    runner = speculative_runner(target, cfg, SpecConfig(k=2, adaptive=False), lookup=True)
    engine = Engine(runner, cfg, adapt_prefill_rate=False, draft_len=runner.policy.draft_len)
    for i in range(4000):
        p = SamplingParams(params.temperature, params.top_p, seed=i)
        # Programs of 80 requests each: later ones also draft from earlier ones' outputs.
        engine.add_request(
            EngineRequest(PROMPT, max_tokens=N_TOKENS, sampling=p, program_id=f"p{i % 50}")
        )
    counts = Counter(tuple(o.token_ids) for o in engine.run_until_done())
    return counts, runner.stats()


@pytest.mark.parametrize(
    "params", [SamplingParams(temperature=1.0), SamplingParams(temperature=0.8, top_p=0.85)]
)
def test_sampled_output_is_the_targets(params: SamplingParams) -> None:
    target = _model(0, layers=2)
    exact = _exact(target, params)  # before the engine takes the model over
    counts, stats = _sample_lookup(target, params)
    assert sum(counts.values()) == 4000
    assert 0.2 < stats.acceptance_rate < 0.95  # both acceptance and rejection paths run
    assert chi_square_p(counts, exact) > 1e-3


def test_the_distribution_test_catches_a_wrong_rejection_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Drawing from p instead of p without the rejected draft (a classic bug) is caught."""
    monkeypatch.setattr(sampling, "point_residual", lambda p, x: p)
    target = _model(0, layers=2)
    params = SamplingParams(temperature=1.0)
    exact = _exact(target, params)
    counts, _ = _sample_lookup(target, params)
    assert chi_square_p(counts, exact) < 1e-6
