"""Speculation policies (pure Python): the adaptive k, and the step-level state machine."""

from __future__ import annotations

import pytest

from harness.llm.engine.config import SpecConfig
from harness.llm.engine.sequence import EngineRequest, SamplingParams, Sequence
from harness.llm.engine.spec_policy import (
    DECAY,
    PROBE_EVERY,
    PROBE_MAX,
    Acceptance,
    RowResult,
    StepPolicy,
    TokenPolicy,
    best_k,
    expected_tokens,
)

DELIM = 10


def _seq(seq_id: int = 0, generated: int = 1, max_tokens: int = 100, **kw: object) -> Sequence:
    req = EngineRequest((1, 2, 3), max_tokens=max_tokens, **kw)  # type: ignore[arg-type]
    return Sequence(seq_id, req, 0.0, 0.0, [1, 2, 3] + [5] * generated)


def test_expected_tokens_and_best_k() -> None:
    assert expected_tokens(0.0, 4) == 1.0 and expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)
    assert best_k(0.95, 0.05, 8) == 8  # cheap, accurate drafts: draft as far as allowed
    assert best_k(0.8, 0.2, 8) in (3, 4)
    assert best_k(0.1, 0.5, 8) == 0  # drafting costs more than it returns


def test_acceptance_is_the_truncated_geometric_estimate() -> None:
    est = Acceptance(accepted=0.0, tested=0.0)
    est.observe(4, 4)  # 4 tested, 4 accepted (no rejection seen)
    est.observe(4, 1)  # 2 tested: one accepted, one rejected
    assert est.rate == pytest.approx((DECAY * 4 + 1) / (DECAY * 4 + 2))
    est.observe(0, 0)
    assert est.idle_rounds == 1


def test_k_follows_each_sequences_own_acceptance() -> None:
    policy = TokenPolicy(SpecConfig(k=6, cost_ratio=0.1))
    good, bad = _seq(0), _seq(1)
    for _ in range(30):
        policy.decide(good, RowResult((7,) * 4, accepted=4, next_token=8))
        policy.decide(bad, RowResult((7,) * 4, accepted=0, next_token=8))
    assert policy.draft_len(good) == 6
    assert policy.draft_len(bad) == 0
    for _ in range(PROBE_EVERY):  # rounds without drafts: then a probe with k = 1
        policy.decide(bad, RowResult((), accepted=0, next_token=8))
    assert policy.draft_len(bad) == 1
    policy.decide(bad, RowResult((7,), accepted=1, next_token=8))  # the probe succeeds
    assert policy.acceptance(bad).probe_every == PROBE_EVERY
    assert policy.draft_len(_seq(2, generated=97)) == 2  # one short of max_tokens
    stats = policy.stats()
    assert stats.drafted == 241 and stats.accepted == 121 and stats.draft_tokens == 121
    assert stats.target_tokens == 60 + PROBE_EVERY + 1


def test_failed_probes_back_off_and_a_program_keeps_its_interval() -> None:
    policy = TokenPolicy(SpecConfig(k=4, cost_ratio=0.5))
    seq = _seq(0, program_id="p")
    intervals = []
    for _ in range(6):  # a draft that never agrees: each probe fails at its first token
        idle = 0
        while policy.draft_len(seq) == 0:
            policy.decide(seq, RowResult((), accepted=0, next_token=8))
            idle += 1
        policy.decide(seq, RowResult((7,) * policy.draft_len(seq), accepted=0, next_token=8))
        intervals.append(idle)
    # The prior drafts at once (not a probe); then 4, 8, 16, 32 idle rounds, capped at 64.
    assert intervals == [0, PROBE_EVERY, 2 * PROBE_EVERY, 4 * PROBE_EVERY, 8 * PROBE_EVERY, 64]
    assert PROBE_MAX == 64
    assert policy.acceptance(seq).probe_every == PROBE_MAX
    policy.release(seq.seq_id)
    assert policy.acceptance(_seq(1, program_id="p")).probe_every == PROBE_MAX


def test_a_programs_estimate_carries_to_its_next_turn() -> None:
    policy = TokenPolicy(SpecConfig(k=6, cost_ratio=0.1))
    turn1 = _seq(0, program_id="p")
    for _ in range(30):
        policy.decide(turn1, RowResult((7,) * 4, accepted=0, next_token=8))
    policy.release(0)
    assert policy.draft_len(_seq(1, program_id="p")) == 0
    assert policy.draft_len(_seq(2, program_id="q")) > 0


def test_fixed_k_when_not_adaptive() -> None:
    policy = TokenPolicy(SpecConfig(k=3, adaptive=False))
    seq = _seq()
    for _ in range(20):
        policy.decide(seq, RowResult((7,) * 3, accepted=0, next_token=8))
    assert policy.draft_len(seq) == 3


def _steps(k: int = 4, **kw: object) -> StepPolicy:
    cfg = SpecConfig(
        k=k,
        adaptive=False,
        conformal_alpha=0.5,
        step_max_tokens=6,
        delimiter_ids=frozenset({DELIM}),
        **kw,  # type: ignore[arg-type]
    )
    return StepPolicy(cfg)


def _scored(drafts: tuple[int, ...], nll: float, first: int = 9) -> RowResult:
    return RowResult(drafts, nll=(nll,) * len(drafts), first_token=first)


def test_a_step_ends_at_its_delimiter_and_low_scores_pass() -> None:
    policy = _steps()
    seq = _seq()
    assert policy.draft_len(seq) == 6 and policy.scored(seq, 6)
    policy.calibrator.add(1.0)
    policy.calibrator.add(2.0)
    policy.calibrator.add(3.0)  # n = 3 at alpha 0.5: q = the 2nd smallest = 2.0
    assert policy.decide(seq, _scored((4, DELIM, 5, 6, 7, 8), 1.5)) == (4, DELIM)
    stats = policy.stats()
    assert (stats.steps_scored, stats.steps_accepted, stats.draft_tokens) == (1, 1, 2)


def test_a_rejected_step_is_written_by_the_target_until_its_end() -> None:
    policy = _steps()
    seq = _seq()
    for s in (1.0, 2.0, 3.0):
        policy.calibrator.add(s)
    assert policy.decide(seq, _scored((4, 4, 4), 50.0, first=11)) == (11,)
    assert policy.stats().rejection_rate == 1.0
    # The target's step: token-level rows, cut at the step's end (6 tokens in all).
    assert not policy.scored(seq, 3)
    assert policy.draft_len(seq) == 4  # k, within the 5 tokens the step has left - 1
    assert policy.decide(seq, RowResult((12, 13, 14), accepted=3, next_token=15)) == (
        12,
        13,
        14,
        15,
    )
    assert policy.draft_len(seq) == 0  # one token left: the target alone
    assert policy.decide(seq, RowResult((), next_token=16)) == (16,)
    assert policy.scored(seq, 6)  # step complete: drafting again
    # A delimiter inside the target's tokens ends its step early.
    policy.decide(seq, _scored((4,), 50.0, first=11))
    assert policy.decide(seq, RowResult((DELIM, 3), accepted=2, next_token=3)) == (DELIM,)
    assert policy.scored(seq, 6)
    stats = policy.stats()
    assert stats.target_tokens == 2 + 1 + 1 and stats.draft_tokens == 3 + 1


def test_resample_redraws_up_to_r_times_then_the_target_writes() -> None:
    policy = _steps(fallback="resample", resample_attempts=2)
    seq = _seq(sampling=SamplingParams())  # greedy: redraws sample at temperature 1
    for s in (1.0, 2.0, 3.0):
        policy.calibrator.add(s)
    assert policy.draft_params(seq).greedy
    assert policy.decide(seq, _scored((4, 4), 50.0)) == ()
    assert policy.draft_params(seq).temperature == 1.0
    assert policy.decide(seq, _scored((4, 4), 50.0)) == ()
    assert policy.decide(seq, _scored((4, 4), 50.0, first=11)) == (11,)
    assert policy.stats().resamples == 2 and policy.stats().steps_rejected == 3
    assert not policy.scored(seq, 4)  # the target's step
    assert policy.draft_params(seq).greedy


def test_no_room_to_draft_is_a_plain_target_token() -> None:
    policy = _steps()
    seq = _seq(generated=99)
    assert policy.draft_len(seq) == 1
    assert not policy.scored(seq, 0)
    assert policy.decide(seq, RowResult((), next_token=3)) == (3,)
    assert policy.stats().steps_scored == 0


def test_a_target_step_drafts_to_its_end_while_other_rows_draft_steps() -> None:
    policy = _steps(k=2)
    seq = _seq()
    for s in (1.0, 2.0, 3.0):
        policy.calibrator.add(s)
    policy.decide(seq, _scored((4, 4), 50.0, first=11))  # rejected: the target's step
    assert policy.draft_len(seq) == 2  # k alone
    policy.end_step(6)  # another row drafted a 6-token step: those forwards run anyway
    assert policy.draft_len(seq) == 4  # the 5 tokens this step has left - 1
    policy.end_step(0)  # no row drafts steps: back to k
    assert policy.draft_len(seq) == 2


def test_stats_since_a_snapshot_and_as_json() -> None:
    from harness.llm.engine.spec_policy import SpecStats

    before = SpecStats("step", rounds=3, drafted=4, accepted=2, draft_tokens=10, steps_scored=2)
    after = SpecStats(
        "step",
        rounds=5,
        drafted=10,
        accepted=5,
        draft_tokens=30,
        target_tokens=10,
        steps_scored=10,
        steps_accepted=8,
        steps_rejected=2,
        threshold=1.5,
        alpha=0.2,
    )
    delta = after.since(before)
    assert (delta.rounds, delta.drafted, delta.accepted, delta.draft_tokens) == (2, 6, 3, 20)
    assert (delta.steps_scored, delta.threshold, delta.alpha) == (8, 1.5, 0.2)
    assert after.since(None) is after
    data = delta.to_json()
    assert data["acceptance_rate"] == 0.5 and data["draft_share"] == round(20 / 30, 4)
    assert data["rejection_rate"] == 0.25 and data["mode"] == "step"
    assert "rejection_rate" not in SpecStats("token").to_json()
