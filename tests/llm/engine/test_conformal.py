"""The split-conformal calibrator (pure Python): the threshold's definition, the (n + 1)
correction, the bounded online window, and the rejection-rate guarantee on exchangeable
score streams (10k steps, alpha in {0.05, 0.1, 0.2, 0.4}: realized rate within alpha + 0.02).
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.llm.engine.conformal import (
    ConformalCalibrator,
    conformal_rank,
    conformal_threshold,
)

ALPHAS = (0.05, 0.1, 0.2, 0.4)
STEPS = 10_000


def _brute_threshold(scores: list[float], alpha: float) -> float:
    """The definition, spelled out: the smallest calibration score s such that at least
    (1 - alpha)(n + 1) of the n + 1 scores (the n plus a new one above s) are <= s."""
    n = len(scores)
    for s in sorted(scores):
        if sum(x <= s for x in scores) >= (1 - alpha) * (n + 1) - 1e-9:
            return s
    return math.inf


@given(
    st.lists(st.floats(-100, 100, allow_nan=False), max_size=60),
    st.sampled_from([0.01, 0.05, 0.1, 0.2, 0.25, 0.4, 0.5, 0.9]),
)
def test_threshold_matches_its_definition(scores: list[float], alpha: float) -> None:
    q = conformal_threshold(sorted(scores), alpha)
    assert q == _brute_threshold(scores, alpha)
    assert not scores or q == math.inf or q in scores


def test_the_n_plus_one_correction() -> None:
    # 9 scores at alpha 0.1: rank ceil(10 * 0.9) = 9, the largest score (not the 8.1st).
    assert conformal_rank(9, 0.1) == 9
    assert conformal_threshold([float(i) for i in range(9)], 0.1) == 8.0
    # Too few scores to reject at this level: the threshold is +inf, every step passes.
    assert conformal_threshold([1.0, 2.0, 3.0], 0.2) == math.inf
    assert conformal_threshold([float(i) for i in range(4)], 0.2) == 3.0
    # alpha = 1 rejects everything, even with no calibration data.
    assert conformal_threshold([], 1.0) == -math.inf


def test_window_is_bounded_and_slides() -> None:
    cal = ConformalCalibrator(0.5, window=3)
    for s in (10.0, 20.0, 30.0, 1.0):
        cal.add(s)
    assert cal.n == 3
    assert cal.threshold() == 20.0  # of (20, 30, 1): rank ceil(4 * 0.5) = 2 -> 20
    cal.add(float("nan"))  # counts as +inf (rejected, and high in the window)
    assert cal.threshold() == 30.0


def test_decide_tests_before_it_adds() -> None:
    cal = ConformalCalibrator(0.2, window=100, initial=[float(i) for i in range(1, 10)])
    assert cal.threshold() == 8.0  # rank ceil(10 * 0.8) = 8
    assert cal.decide(8.0) and not cal.decide(9.5)  # reject iff score > q (ties accepted)
    stats = cal.stats()
    assert (stats.decisions, stats.rejections, stats.rejection_rate) == (2, 1, 0.5)


def _stream(kind: str, rng: random.Random) -> float:
    if kind == "normal":
        return rng.gauss(2.0, 1.0)
    if kind == "exponential":
        return rng.expovariate(0.5)
    if kind == "heavy":  # log-perplexities have long right tails
        return rng.paretovariate(1.5)
    return float(rng.randint(0, 30))  # discrete: ties


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("kind", ["normal", "exponential", "heavy", "discrete"])
@pytest.mark.parametrize("window", [64, 512])
def test_rejection_rate_guarantee_on_exchangeable_streams(
    alpha: float, kind: str, window: int
) -> None:
    rng = random.Random(f"{alpha}-{kind}-{window}")
    cal = ConformalCalibrator(alpha, window=window)
    for _ in range(STEPS):
        cal.decide(_stream(kind, rng))
    rate = cal.stats().rejection_rate
    assert rate <= alpha + 0.02
    if kind != "discrete":  # continuous scores: the rate is also at least alpha - 1/(n+1)
        assert rate >= alpha - 1 / (window + 1) - 0.02


@settings(max_examples=12, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(ALPHAS),
    st.sampled_from([16, 100, 1000]),
)
def test_guarantee_for_any_seed_and_window(seed: int, alpha: float, window: int) -> None:
    rng = random.Random(seed)
    cal = ConformalCalibrator(alpha, window=window)
    for _ in range(STEPS):
        cal.decide(rng.lognormvariate(0.0, 1.0))
    assert cal.stats().rejection_rate <= alpha + 0.02


def test_bad_levels_are_refused() -> None:
    for alpha in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            ConformalCalibrator(alpha)
    with pytest.raises(ValueError):
        ConformalCalibrator(0.1, window=0)
