"""How long to pin a program's KV across a tool call, and which pin to drop first (pure Python).

For the tool `t` that follows a turn we keep the last `gap_window` observed gaps (turn end to
next turn arrival) and use their empirical CDF F. Pinning n_blocks of B for a TTL tau saves a
recompute of R = n_tokens / prefill_rate seconds with probability F(tau), and holds memory for
E[min(G, tau)] seconds. With price p (engine-seconds per whole-cache-second) scaled by the
current memory pressure u in [0, 1]:

    U(tau) = F(tau) * R - p * u * (n_blocks / B) * E[min(G, tau)]

F jumps only at observed gaps, so the best tau is one of them; U <= 0 everywhere means no pin.
Under pressure the pin with the lowest P(G <= tau | G > elapsed) is dropped first.
Tool names come from clients (`next_tool` of `harness serve`), so the names with statistics
are bounded: the least recently observed name is forgotten first.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict, deque

from harness.llm.engine.config import EngineConfig

DEFAULT_TOOL = "_"
# Median gaps (s) after the harness pipeline's tool hints, measured on real SWE-bench Lite
# instances (benchmarks/real_pipeline.py -> benchmarks/results/tool_gaps.json): the prior
# before the engine has seen a tool's gaps. A config's tool_priors win.
MEASURED_GAP_S: dict[str, float] = {"run_test": 1.638, "edit_and_test": 5.121}
MAX_TOOLS = 256  # tool names with gap statistics; agents use a handful


class GapStats:
    """A bounded window of observed tool gaps per tool name, kept sorted for CDF queries.

    At most `max_tools` names are kept (the default name always among them); a forgotten or
    never seen name has no samples, so its TTL comes from the priors or the default."""

    def __init__(self, window: int, max_tools: int = MAX_TOOLS) -> None:
        self.window = window
        self.max_tools = max(max_tools, 1)
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()  # least recent first
        self._sorted: dict[str, list[float]] = {}

    @property
    def tools(self) -> list[str]:
        """The names with statistics, least recently observed first."""
        return list(self._recent)

    def observe(self, tool: str | None, gap: float) -> None:
        key = tool or DEFAULT_TOOL
        if key in self._recent:
            self._recent.move_to_end(key)
        else:
            self._forget_one_if_full()
            self._recent[key] = deque()
            self._sorted[key] = []
        recent, ordered = self._recent[key], self._sorted[key]
        recent.append(gap)
        bisect.insort(ordered, gap)
        if len(recent) > self.window:
            old = recent.popleft()
            del ordered[bisect.bisect_left(ordered, old)]

    def _forget_one_if_full(self) -> None:
        if len(self._recent) < self.max_tools:
            return
        # The least recent name other than the default one (which goes only when it is all
        # there is, with max_tools 1).
        oldest = next((k for k in self._recent if k != DEFAULT_TOOL), DEFAULT_TOOL)
        del self._recent[oldest]
        del self._sorted[oldest]

    def samples(self, tool: str | None) -> list[float]:
        return self._sorted.get(tool or DEFAULT_TOOL, [])

    def cdf(self, tool: str | None, t: float) -> float:
        s = self.samples(tool)
        return bisect.bisect_right(s, t) / len(s) if s else 0.0


class TtlPolicy:
    """Chooses pin TTLs from gap statistics and ranks pins for eviction."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.stats = GapStats(config.gap_window)
        self.priors = {**MEASURED_GAP_S, **dict(config.tool_priors)}
        self.prefill_rate = config.prefill_tok_per_s

    def observe_gap(self, tool: str | None, gap: float) -> None:
        self.stats.observe(tool, max(0.0, gap))

    def observe_prefill(self, tokens: int, seconds: float) -> None:
        """Refine the recompute-cost estimate (EWMA of prefill throughput)."""
        if tokens >= 64 and seconds > 0:
            self.prefill_rate = 0.8 * self.prefill_rate + 0.2 * (tokens / seconds)

    def loss_s(self, n_tokens: int) -> float:
        """Engine seconds lost when a pin is dropped: recompute, or a copy back from the CPU."""
        recompute = n_tokens / max(self.prefill_rate, 1e-9)
        if self.config.offload:
            return min(recompute, n_tokens / self.config.restore_tok_per_s)
        return recompute

    def ttl(
        self, tool: str | None, n_tokens: int, n_blocks: int, total_blocks: int, pressure: float
    ) -> float:
        """Seconds to pin; 0 means do not pin."""
        cfg = self.config
        samples = self.stats.samples(tool)
        if not samples:
            prior = self.priors.get(tool or DEFAULT_TOOL)
            guess = cfg.default_ttl_s if prior is None else 1.5 * prior
            return min(max(guess, cfg.min_ttl_s), cfg.max_ttl_s)
        recompute_s = self.loss_s(n_tokens)
        hold_price = cfg.memory_price * min(max(pressure, 0.0), 1.0) * n_blocks / total_blocks
        n = len(samples)
        best_tau, best_u, prefix = 0.0, 0.0, 0.0
        for k, g in enumerate(samples):
            prefix += g
            if g > cfg.max_ttl_s:
                break
            expected_hold = (prefix + (n - k - 1) * g) / n
            u = (k + 1) / n * recompute_s - hold_price * expected_hold
            if u > best_u:
                best_tau, best_u = g, u
        if best_u <= 0.0:
            return 0.0
        # A small margin so that a gap equal to the chosen sample still lands inside the pin.
        return min(max(1.1 * best_tau + 0.05, cfg.min_ttl_s), cfg.max_ttl_s)

    def reuse_probability(self, tool: str | None, elapsed: float, ttl: float) -> float:
        """P(the tool returns before the pin expires | it has not returned after `elapsed`)."""
        if elapsed >= ttl:
            return 0.0
        s = self.stats.samples(tool)
        # One imaginary observation spread evenly over [0, H], H = twice the longest gap or
        # TTL, keeps a tool later than every gap seen so far from scoring a hard 0 (tails
        # are heavy and samples few).
        prior = 1.0 / (len(s) + 1)
        horizon = 2.0 * max(ttl, s[-1] if s else ttl)
        f_elapsed, f_ttl = self.stats.cdf(tool, elapsed), self.stats.cdf(tool, ttl)
        within = (1.0 - prior) * (f_ttl - f_elapsed) + prior * (ttl - elapsed) / horizon
        beyond = (1.0 - prior) * (1.0 - f_elapsed) + prior * (horizon - elapsed) / horizon
        return within / beyond if beyond > 0 else 0.0

    def keep_value(
        self,
        tool: str | None,
        elapsed: float,
        ttl: float,
        n_tokens: int,
        n_blocks: int,
        total_blocks: int,
    ) -> float:
        """U of keeping a pin from now on, at full pressure (someone is waiting for memory)."""
        p = self.reuse_probability(tool, elapsed, ttl)
        recompute_s = self.loss_s(n_tokens)
        later = [min(g, ttl) - elapsed for g in self.stats.samples(tool) if g > elapsed]
        hold = sum(later) / len(later) if later else max(ttl - elapsed, 0.0) / 2
        return p * recompute_s - self.config.memory_price * n_blocks / total_blocks * hold
