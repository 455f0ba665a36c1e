"""Step-level conformal rejection (ATTS) in the engine, on real tiny models.

* alpha = 1 rejects every step: the target writes all of them, so the greedy output is the
  target's own (`generate`), token for token.
* alpha -> 0 accepts every step: the output is the draft's own greedy continuation.
* On the live stream of real step scores (10k steps, sampled text), the realized rejection
  rate stays within alpha + 0.02 for alpha in {0.05, 0.1, 0.2, 0.4}.
* The resample fallback redraws a rejected step before the target writes it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from harness.llm.engine.config import EngineConfig, SpecConfig
from harness.llm.engine.conformal import ConformalCalibrator
from harness.llm.engine.draft import self_draft
from harness.llm.engine.engine import Engine, RequestOutput
from harness.llm.engine.sequence import EngineRequest, SamplingParams
from harness.llm.engine.spec_policy import StepPolicy
from harness.llm.engine.speculative import SpeculativeRunner, speculative_runner
from tests.llm.engine.conftest import VOCAB, greedy_reference, near_model

DELIMS = frozenset(range(0, VOCAB, 16))  # 1 token in 16 ends a step


class RecordingCalibrator(ConformalCalibrator):
    """The real calibrator, keeping every score it decided (to report the stream)."""

    def __init__(self, alpha: float, window: int) -> None:
        super().__init__(alpha, window)
        self.scores: list[float] = []

    def decide(self, score: float) -> bool:
        self.scores.append(score)
        return super().decide(score)


def _prompts(seed: int, n: int, length: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (length,), generator=g).tolist() for _ in range(n)]


def _engine(model: Any, alpha: float, **kw: Any) -> tuple[Engine, SpeculativeRunner]:
    cfg = EngineConfig(
        block_size=16, num_blocks=2048, max_batched_tokens=8192, max_num_seqs=256, policy="lru"
    )
    spec = SpecConfig(
        k=4,
        conformal_alpha=alpha,
        step_max_tokens=4,
        delimiter_ids=DELIMS,
        calibration_window=256,
        **kw,
    )
    runner = speculative_runner(model, cfg, spec, self_draft_layers=2)
    engine = Engine(runner, cfg, adapt_prefill_rate=False, draft_len=runner.policy.draft_len)
    return engine, runner


def _run(engine: Engine, prompts: list[list[int]], n: int, **kw: Any) -> list[RequestOutput]:
    ids = [engine.add_request(EngineRequest(tuple(p), max_tokens=n, **kw)) for p in prompts]
    done = {o.request_id: o for o in engine.run_until_done()}
    return [done[i] for i in ids]


def test_alpha_one_rejects_every_step_and_gives_the_targets_greedy_output() -> None:
    model = near_model(0.5)
    prompts = _prompts(1, 4, 9)
    engine, runner = _engine(model, 1.0)
    outs = _run(engine, prompts, 20)
    for p, o in zip(prompts, outs, strict=True):
        assert list(o.token_ids) == greedy_reference(model, p, 20)
    stats = runner.stats()
    assert stats.steps_scored > 0 and stats.rejection_rate == 1.0
    # The only draft tokens kept are verified ones inside the target's steps (some accepted
    # ones fall past a step's end and are dropped).
    assert 0 < stats.draft_tokens <= stats.accepted
    assert stats.draft_tokens + stats.target_tokens == sum(len(o.token_ids) for o in outs)
    assert engine.scheduler.bm.num_free == 2048


def test_tiny_alpha_accepts_every_step_and_gives_the_drafts_greedy_output() -> None:
    model = near_model(0.5)
    draft = self_draft(copy.deepcopy(model), 2)  # the same layers, outside the engine
    prompts = _prompts(2, 4, 9)
    expected = []
    for p in prompts:
        first = greedy_reference(model, p, 1)  # the prompt's last logits are the target's
        expected.append(first + greedy_reference(draft, p + first, 19))
    engine, runner = _engine(model, 1e-9)
    outs = _run(engine, prompts, 20)
    assert [list(o.token_ids) for o in outs] == expected
    stats = runner.stats()
    assert stats.steps_scored > 0 and stats.steps_rejected == 0
    assert stats.draft_tokens == 4 * 19 and stats.target_tokens == 4


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2, 0.4])
def test_realized_rejection_rate_on_real_scores(alpha: float) -> None:
    engine, runner = _engine(near_model(0.5), alpha)
    policy = runner.policy
    assert isinstance(policy, StepPolicy)
    recorder = RecordingCalibrator(alpha, 256)
    policy.calibrator = recorder
    prompts = _prompts(3, 256, 8)
    for i, p in enumerate(prompts):
        sampling = SamplingParams(temperature=1.0, seed=i)
        engine.add_request(EngineRequest(tuple(p), max_tokens=150, sampling=sampling))
    engine.run_until_done()
    stats = runner.stats()
    assert stats.steps_scored >= 10_000
    assert len(set(recorder.scores)) > 1000  # real, varied scores (log-perplexities)
    assert alpha - 0.03 <= stats.rejection_rate <= alpha + 0.02
    assert stats.steps_accepted + stats.steps_rejected == stats.steps_scored


def test_resample_redraws_before_the_target_writes() -> None:
    model = near_model(0.5)
    engine, runner = _engine(model, 0.3, fallback="resample", resample_attempts=1)
    outs = _run(engine, _prompts(4, 16, 9), 40)  # greedy: redraws sample at temperature 1
    stats = runner.stats()
    assert stats.resamples > 0
    # Each redraw follows one rejection; the other rejections went to the target.
    assert stats.resamples <= stats.steps_rejected
    assert stats.steps_rejected > stats.resamples
    assert sum(len(o.token_ids) for o in outs) == 16 * 40
    assert stats.draft_tokens + stats.target_tokens == 16 * 40
    assert engine.scheduler.bm.num_free == 2048
