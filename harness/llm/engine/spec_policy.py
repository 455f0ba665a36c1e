"""What speculative decoding decides, in pure Python: how many tokens to draft, and what a
row appends once the target has looked at its drafts.

`TokenPolicy`: token-level speculation. Each sequence keeps a decayed estimate of its
per-token acceptance rate `a` (accepted / tested, where a round tests every accepted draft plus the
first rejected one: the maximum-likelihood estimate, here with a prior and exponential
forgetting) and drafts the `k <= k_max`
that maximises the expected tokens per unit of time,

    E[tokens](k) / cost(k) = ((1 - a^(k+1)) / (1 - a)) / (1 + c * k)

(Leviathan et al.; `c` = draft / target time per token). When no `k >= 1` beats plain
decoding, the sequence decodes alone and probes with `k = 1` every few rounds, backing off
(4, 8, ... 64 rounds) while the probes keep failing at their first token. A program's
estimate carries over to its next turn. A batched step runs as many draft forwards as its
longest row and pads verification to it, so a greedy row that drafts at all drafts as far as
the largest k of the step before (free tokens; greedy output does not depend on k). Sampled
rows keep their own k: it depends on their own history only, so seeded sampling stays
reproducible whatever else is batched.

`StepPolicy`: step-level conformal rejection (ATTS). A sequence alternates between draft
steps, scored by the target and accepted or rejected by a `ConformalCalibrator`, and steps the
target writes after a rejection (token-level speculation inside them keeps them exact; while
other rows draft whole steps, those draft forwards run anyway, so a target-written step
drafts to its end).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol

from harness.llm.engine.config import SpecConfig
from harness.llm.engine.conformal import ConformalCalibrator
from harness.llm.engine.sequence import SamplingParams, Sequence

PRIOR_ACCEPT = 0.6  # acceptance rate assumed before a sequence (or its program) has data
PRIOR_WEIGHT = 4.0  # in tested tokens: one early rejection must not switch drafting off
DECAY = 0.95  # per round: the estimate follows the last ~20 rounds
PROBE_EVERY = 4  # rounds between k = 1 probes when speculation does not pay ...
PROBE_MAX = 64  # ... doubling up to this while every probe fails at its first token
MAX_PROGRAMS = 4096


@dataclass(frozen=True)
class RowResult:
    """What the runner measured for one speculative row."""

    drafts: tuple[int, ...]  # tokens the draft proposed, in order
    accepted: int = 0  # token level: leading drafts that rejection sampling accepted
    next_token: int | None = None  # token level: the correction (or bonus) from the target
    nll: tuple[float, ...] = ()  # step level: target negative log-likelihood of each draft
    first_token: int | None = None  # step level: a target sample at the step's first position


# The additive fields of SpecStats (a run's share is a difference, a batch's a sum).
SPEC_COUNTERS = (
    "rounds",
    "drafted",
    "accepted",
    "draft_tokens",
    "target_tokens",
    "steps_scored",
    "steps_accepted",
    "steps_rejected",
    "resamples",
)


@dataclass(frozen=True)
class SpecStats:
    """Counters of one engine's speculation (a snapshot)."""

    mode: Literal["token", "step"]
    rounds: int = 0  # speculative row-steps
    drafted: int = 0  # tokens proposed for token-level verification
    accepted: int = 0  # of them accepted
    draft_tokens: int = 0  # output tokens the draft wrote (accepted drafts and steps)
    target_tokens: int = 0  # output tokens the target sampled
    steps_scored: int = 0
    steps_accepted: int = 0
    steps_rejected: int = 0
    resamples: int = 0  # rejected steps redrawn by the draft
    threshold: float | None = None  # current conformal threshold (step level)
    alpha: float | None = None

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def rejection_rate(self) -> float:
        return self.steps_rejected / self.steps_scored if self.steps_scored else 0.0

    @property
    def draft_share(self) -> float:
        total = self.draft_tokens + self.target_tokens
        return self.draft_tokens / total if total else 0.0

    def since(self, before: SpecStats | None) -> SpecStats:
        """The counters added after the snapshot `before` (threshold and alpha: now)."""
        if before is None:
            return self
        delta = {name: getattr(self, name) - getattr(before, name) for name in SPEC_COUNTERS}
        return replace(self, **delta)

    def to_json(self) -> dict[str, Any]:
        """The counters plus the derived rates (what summary.json and the report show)."""
        data: dict[str, Any] = asdict(self)
        data["acceptance_rate"] = round(self.acceptance_rate, 4)
        data["draft_share"] = round(self.draft_share, 4)
        if self.mode == "step":
            data["rejection_rate"] = round(self.rejection_rate, 4)
        return data


class SpecPolicy(Protocol):
    def draft_len(self, seq: Sequence) -> int: ...

    def scored(self, seq: Sequence, draft: int) -> bool: ...

    def draft_params(self, seq: Sequence) -> SamplingParams: ...

    def decide(self, seq: Sequence, row: RowResult) -> tuple[int, ...]: ...

    def observe_plain(self, seq: Sequence, token: int) -> None: ...

    def end_step(self, step_drafts: int) -> None: ...

    def release(self, seq_id: int) -> None: ...

    def stats(self) -> SpecStats: ...


def expected_tokens(rate: float, k: int) -> float:
    """Tokens one round yields with k drafts and i.i.d. acceptance `rate` (bonus included)."""
    if rate >= 1.0:
        return float(k + 1)
    return (1.0 - rate ** (k + 1)) / (1.0 - rate)


def best_k(rate: float, cost_ratio: float, k_max: int) -> int:
    """The k in [0, k_max] with the most expected tokens per unit of target time."""
    best, best_value = 0, 1.0
    for k in range(1, k_max + 1):
        value = expected_tokens(rate, k) / (1.0 + cost_ratio * k)
        if value > best_value + 1e-12:
            best, best_value = k, value
        elif k > best + 1:  # the ratio is unimodal in k: past its peak it only falls
            break
    return best


@dataclass
class Acceptance:
    """Decayed counts of accepted and tested draft tokens."""

    accepted: float = PRIOR_ACCEPT * PRIOR_WEIGHT
    tested: float = PRIOR_WEIGHT
    idle_rounds: int = 0  # rounds since the last one that drafted
    probe_every: int = PROBE_EVERY  # idle rounds before a k = 1 probe
    probing: bool = False  # this round drafts only to probe

    @property
    def rate(self) -> float:
        return self.accepted / self.tested if self.tested else 0.0

    def observe(self, drafted: int, accepted: int) -> None:
        if drafted == 0:
            self.idle_rounds += 1
            return
        self.idle_rounds = 0
        # A probe that fails at its first token waits longer before the next one.
        if accepted:
            self.probe_every = PROBE_EVERY
        elif self.probing:
            self.probe_every = min(2 * self.probe_every, PROBE_MAX)
        self.probing = False
        self.accepted = DECAY * self.accepted + accepted
        self.tested = DECAY * self.tested + accepted + (1 if accepted < drafted else 0)


@dataclass
class _Counters:
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    draft_tokens: int = 0
    target_tokens: int = 0
    steps_scored: int = 0
    steps_accepted: int = 0
    steps_rejected: int = 0
    resamples: int = 0


class TokenPolicy:
    """Token-level speculation with a per-sequence adaptive k."""

    def __init__(self, config: SpecConfig) -> None:
        self.config = config
        self.counts = _Counters()
        self._seqs: dict[int, Acceptance] = {}
        self._program_of: dict[int, str] = {}
        self._programs: dict[str, Acceptance] = {}
        self._step_max = 0  # largest own k asked for in this step
        self._shared = 0  # ... and in the step before: the draft forwards that will run

    def acceptance(self, seq: Sequence) -> Acceptance:
        est = self._seqs.get(seq.seq_id)
        if est is None:
            pid = seq.program_id
            prior = self._programs.get(pid) if pid is not None else None
            est = (
                Acceptance(prior.accepted, prior.tested, probe_every=prior.probe_every)
                if prior
                else Acceptance()
            )
            self._seqs[seq.seq_id] = est
            if pid is not None:
                self._program_of[seq.seq_id] = pid
        return est

    def draft_len(self, seq: Sequence) -> int:
        cfg = self.config
        if not cfg.adaptive:
            k = cfg.k
        else:
            est = self.acceptance(seq)
            k = best_k(est.rate, cfg.cost_ratio, cfg.k)
            est.probing = k == 0 and est.idle_rounds >= est.probe_every
            if est.probing:
                k = 1
            self._step_max = max(self._step_max, k)
            if k > 0 and seq.request.sampling.greedy:
                k = max(k, self._shared)
        # One token short of max_tokens: the round's own target token completes it.
        remaining = seq.request.max_tokens - seq.num_generated
        return max(0, min(k, remaining - 1))

    def scored(self, seq: Sequence, draft: int) -> bool:
        return False

    def draft_params(self, seq: Sequence) -> SamplingParams:
        return seq.request.sampling

    def decide(self, seq: Sequence, row: RowResult) -> tuple[int, ...]:
        if row.next_token is None:
            raise ValueError("a token-level row needs the target's next token")
        self.acceptance(seq).observe(len(row.drafts), row.accepted)
        c = self.counts
        c.rounds += 1
        c.drafted += len(row.drafts)
        c.accepted += row.accepted
        c.draft_tokens += row.accepted
        c.target_tokens += 1
        return (*row.drafts[: row.accepted], row.next_token)

    def observe_plain(self, seq: Sequence, token: int) -> None:
        self.counts.target_tokens += 1

    def end_step(self, step_drafts: int) -> None:
        self._shared, self._step_max = max(self._step_max, step_drafts), 0

    def release(self, seq_id: int) -> None:
        est = self._seqs.pop(seq_id, None)
        pid = self._program_of.pop(seq_id, None)
        if est is not None and pid is not None:
            self._programs.pop(pid, None)
            self._programs[pid] = est  # most recent last
            while len(self._programs) > MAX_PROGRAMS:
                del self._programs[next(iter(self._programs))]

    def stats(self) -> SpecStats:
        c = self.counts
        return SpecStats("token", c.rounds, c.drafted, c.accepted, c.draft_tokens, c.target_tokens)


@dataclass
class _Step:
    phase: Literal["draft", "target"] = "draft"
    written: int = 0  # tokens of the current step, target phase
    attempts: int = 0  # rejected drafts of the current step


class StepPolicy:
    """Step-level conformal rejection; each sequence decides alone (no cross-sample barrier)."""

    def __init__(self, config: SpecConfig) -> None:
        if config.conformal_alpha is None:
            raise ValueError("StepPolicy needs conformal_alpha")
        self.config = config
        self.calibrator = ConformalCalibrator(config.conformal_alpha, config.calibration_window)
        self.tokens = TokenPolicy(config)  # for the steps the target writes
        self.counts = self.tokens.counts
        self._steps: dict[int, _Step] = {}
        self._step_drafts = 0  # draft forwards the last step ran for draft-phase rows

    def _state(self, seq: Sequence) -> _Step:
        return self._steps.setdefault(seq.seq_id, _Step())

    def draft_len(self, seq: Sequence) -> int:
        st = self._state(seq)
        remaining = seq.request.max_tokens - seq.num_generated
        if st.phase == "draft":
            return max(0, min(self.config.step_max_tokens, remaining))
        left = self.config.step_max_tokens - st.written
        k = self.tokens.draft_len(seq)
        if k > 0:
            # Rows drafting whole steps make the draft run step_max_tokens forwards anyway;
            # drafting to this step's end then costs only verification (one padded pass).
            k = max(k, self._step_drafts)
        return max(0, min(k, left - 1, seq.request.max_tokens - seq.num_generated - 1))

    def scored(self, seq: Sequence, draft: int) -> bool:
        return draft > 0 and self._state(seq).phase == "draft"

    def draft_params(self, seq: Sequence) -> SamplingParams:
        st, params = self._state(seq), seq.request.sampling
        if st.phase == "draft" and st.attempts > 0 and params.greedy:
            # A greedy draft would only redraw the step it just had rejected.
            return SamplingParams(self.config.resample_temperature, params.top_p, params.seed)
        return params

    def step_len(self, drafts: tuple[int, ...]) -> int:
        for i, tok in enumerate(drafts):
            if tok in self.config.delimiter_ids:
                return i + 1
        return len(drafts)

    def decide(self, seq: Sequence, row: RowResult) -> tuple[int, ...]:
        st = self._state(seq)
        if st.phase == "draft" and row.drafts:
            return self._decide_step(st, row)
        tokens = self.tokens.decide(seq, row)
        if st.phase == "draft":  # no room to draft (max_tokens): a plain target token
            return tokens
        return self._target_wrote(st, tokens, row.accepted)

    def _decide_step(self, st: _Step, row: RowResult) -> tuple[int, ...]:
        c = self.counts
        n = self.step_len(row.drafts)
        nll = row.nll[:n]
        score = sum(nll) / len(nll) if nll else float("inf")  # log-perplexity of the step
        c.rounds += 1
        c.steps_scored += 1
        if self.calibrator.decide(score):
            c.steps_accepted += 1
            c.draft_tokens += n
            st.attempts = 0
            return row.drafts[:n]
        c.steps_rejected += 1
        st.attempts += 1
        if self.config.fallback == "resample" and st.attempts <= self.config.resample_attempts:
            c.resamples += 1
            return ()
        if row.first_token is None:
            raise ValueError("a scored row needs the target's first token")
        c.target_tokens += 1
        st.phase, st.written, st.attempts = "target", 0, 0
        return self._target_wrote(st, (row.first_token,), 0)

    def _target_wrote(self, st: _Step, tokens: tuple[int, ...], drafted: int) -> tuple[int, ...]:
        """Cut the target's tokens at the end of its step; back to drafting after it."""
        left = self.config.step_max_tokens - st.written
        out = tokens[:left]
        for i, tok in enumerate(out):
            if tok in self.config.delimiter_ids:
                out = out[: i + 1]
                break
        dropped = len(tokens) - len(out)
        if dropped:  # tokens past the step were counted as written; uncount them
            target_dropped = 1 if len(tokens) > drafted else 0
            self.counts.target_tokens -= min(target_dropped, dropped)
            self.counts.draft_tokens -= dropped - min(target_dropped, dropped)
        st.written += len(out)
        if st.written >= self.config.step_max_tokens or (
            out and out[-1] in self.config.delimiter_ids
        ):
            st.phase, st.written = "draft", 0
        return out

    def end_step(self, step_drafts: int) -> None:
        self._step_drafts = step_drafts
        self.tokens.end_step(0)

    def observe_plain(self, seq: Sequence, token: int) -> None:
        self.counts.target_tokens += 1
        st = self._state(seq)
        if st.phase == "target":
            self._target_wrote(st, (token,), 0)

    def release(self, seq_id: int) -> None:
        self._steps.pop(seq_id, None)
        self.tokens.release(seq_id)

    def stats(self) -> SpecStats:
        c = self.counts
        return SpecStats(
            "step",
            c.rounds,
            c.drafted,
            c.accepted,
            c.draft_tokens,
            c.target_tokens,
            c.steps_scored,
            c.steps_accepted,
            c.steps_rejected,
            c.resamples,
            threshold=self.calibrator.stats().threshold,
            alpha=self.calibrator.alpha,
        )
