"""Split-conformal step rejection (ATTS, PAPERS.md section 2), online over a bounded window.

Pure Python, no torch. With `n` calibration scores and level `alpha`, the threshold is

    q = the ceil((n + 1) * (1 - alpha))-th smallest calibration score

(+inf when that rank exceeds `n`: too few scores to reject anything at this level; -inf when
it is 0, i.e. `alpha = 1`). A new step is rejected iff its score > q. If the new score and the
calibration scores are exchangeable, its rank among the n + 1 is uniform, so

    P(reject) = P(rank > ceil((n + 1)(1 - alpha))) <= alpha

(and >= alpha - 1/(n + 1) when there are no ties). Calibration is online: every scored step
enters the window after its own decision, accepted or rejected, so the window is a sample of
the same stream and not one truncated by the decisions.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# (n + 1)(1 - alpha) is often an integer in exact arithmetic (n = 9, alpha = 0.1); floating
# point may land just above it, and ceil would then ask for one rank too many.
_EPS = 1e-9


def conformal_rank(n: int, alpha: float) -> int:
    """The 1-based rank of the threshold among `n` sorted scores (may be 0 or n + 1)."""
    return max(0, math.ceil((n + 1) * (1.0 - alpha) - _EPS))


def conformal_threshold(sorted_scores: Sequence[float], alpha: float) -> float:
    """q for `sorted_scores` (ascending) at level `alpha`."""
    rank = conformal_rank(len(sorted_scores), alpha)
    if rank > len(sorted_scores):
        return math.inf
    if rank == 0:
        return -math.inf
    return sorted_scores[rank - 1]


@dataclass(frozen=True)
class ConformalStats:
    decisions: int
    rejections: int
    calibration_size: int
    threshold: float

    @property
    def rejection_rate(self) -> float:
        return self.rejections / self.decisions if self.decisions else 0.0


class ConformalCalibrator:
    """Decides steps by score against the last `window` scores; NaN scores count as +inf."""

    def __init__(self, alpha: float, window: int = 512, initial: Iterable[float] = ()) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"conformal alpha must be in (0, 1], got {alpha}")
        if window < 1:
            raise ValueError("the calibration window must hold at least one score")
        self.alpha = alpha
        self.window = window
        self._order: deque[float] = deque()
        self._sorted: list[float] = []
        self.decisions = 0
        self.rejections = 0
        for s in initial:
            self.add(s)

    @property
    def n(self) -> int:
        return len(self._order)

    def threshold(self) -> float:
        return conformal_threshold(self._sorted, self.alpha)

    def accepts(self, score: float) -> bool:
        return _clean(score) <= self.threshold()

    def add(self, score: float) -> None:
        score = _clean(score)
        if len(self._order) == self.window:
            old = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._order.append(score)
        bisect.insort(self._sorted, score)

    def decide(self, score: float) -> bool:
        """Accept (True) or reject the step, then add its score to the window."""
        accept = self.accepts(score)
        self.add(score)
        self.decisions += 1
        self.rejections += 0 if accept else 1
        return accept

    def stats(self) -> ConformalStats:
        """A snapshot; safe to take from another thread while the engine decides (the copy of
        the sorted window is one atomic list operation)."""
        window = self._sorted[:]
        q = conformal_threshold(window, self.alpha)
        return ConformalStats(self.decisions, self.rejections, len(window), q)


def _clean(score: float) -> float:
    return math.inf if math.isnan(score) else float(score)
