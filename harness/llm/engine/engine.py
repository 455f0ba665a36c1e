"""The engine loop: scheduler + runner + clock; `client.EngineLLM` runs it in a thread.

A step that raises fails only the requests scheduled in it (`StepError`); the engine stays usable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.llm.engine.clock import Clock, MonotonicClock
from harness.llm.engine.config import EngineConfig
from harness.llm.engine.plan import SchedulerOutput, SchedulerStats
from harness.llm.engine.runner import Runner
from harness.llm.engine.scheduler import DraftLen, Scheduler
from harness.llm.engine.sequence import EngineRequest, Sequence

ForwardHook = Callable[[SchedulerOutput, float], None]  # (step, measured seconds)


@dataclass(frozen=True)
class RequestOutput:
    request_id: int
    token_ids: tuple[int, ...]  # generated tokens
    finish_reason: str
    prompt_tokens: int
    cached_tokens: int
    preemptions: int
    arrival: float
    first_token_time: float | None
    finish_time: float | None
    program_id: str | None = None


def _output(seq: Sequence) -> RequestOutput:
    return RequestOutput(
        request_id=seq.seq_id,
        token_ids=tuple(seq.generated),
        finish_reason=seq.finish_reason or "stop",
        prompt_tokens=seq.prompt_len,
        cached_tokens=seq.num_cached,
        preemptions=seq.preemptions,
        arrival=seq.arrival,
        first_token_time=seq.first_token_time,
        finish_time=seq.finish_time,
        program_id=seq.program_id,
    )


class StepError(RuntimeError):
    """A step raised (its cause is `__cause__`); `failed` are the requests scheduled in it,
    already aborted. Every other request is untouched and the engine can keep stepping."""

    def __init__(self, failed: list[RequestOutput]) -> None:
        super().__init__(f"an engine step failed; {len(failed)} request(s) in it were aborted")
        self.failed = failed


@dataclass
class EngineStats:
    steps: int = 0
    forward_s: float = 0.0  # measured time inside the runner
    scheduled_tokens: int = 0
    failed_steps: int = 0  # steps that raised (their requests failed, the engine went on)
    failed_requests: int = 0  # requests that were in a failed step
    aborted: int = 0  # requests aborted by their caller (cancelled, client gone)


class Engine:
    """Add requests, call `step()` until `has_unfinished()` is False.

    `on_forward` is called after each forward pass with the step and its measured duration,
    before finish times are stamped: a replayer with a simulated clock advances it there.
    `draft_len` (with a speculative runner) says how many tokens each decoding sequence drafts.
    """

    def __init__(
        self,
        runner: Runner,
        config: EngineConfig,
        *,
        eos_token_ids: tuple[int, ...] = (),
        clock: Clock | None = None,
        on_forward: ForwardHook | None = None,
        adapt_prefill_rate: bool = True,
        draft_len: DraftLen | None = None,
    ) -> None:
        self.config = config
        self.runner = runner
        self.clock = clock or MonotonicClock()
        self.scheduler = Scheduler(config, eos_token_ids, draft_len)
        self.on_forward = on_forward
        self.adapt_prefill_rate = adapt_prefill_rate
        self.stats = EngineStats()
        self._next_id = 0

    def add_request(self, request: EngineRequest) -> int:
        seq_id = self._next_id
        self._next_id += 1
        self.scheduler.add(seq_id, request, self.clock.now())
        return seq_id

    def abort(self, request_id: int) -> RequestOutput | None:
        seq = self.scheduler.abort(request_id)
        if seq is None:
            return None
        self.runner.release(seq.seq_id)
        self.stats.aborted += 1
        return _output(seq)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def next_timer(self) -> float | None:
        """When the next pin expires (the loop may sleep until then when idle)."""
        return self.scheduler.next_expiry()

    @property
    def scheduler_stats(self) -> SchedulerStats:
        return self.scheduler.stats

    def step(self) -> list[RequestOutput]:
        """Schedule, run one forward pass, and return the requests that finished in it.

        Raises `StepError` when the forward pass or its bookkeeping fails, after aborting the
        requests of this step. A failure in the scheduler itself, or in a step that moved KV
        blocks to or from the CPU tier (the prefix cache's books may no longer match the
        tensors), propagates as is: the engine cannot go on safely.
        """
        out = self.scheduler.schedule(self.clock.now())
        if not out.items and not out.copy_ops:
            return []
        try:
            return self._run(out)
        except Exception as e:
            if out.copy_ops:
                raise
            raise StepError(self._fail(out)) from e

    def _fail(self, out: SchedulerOutput) -> list[RequestOutput]:
        failed: dict[int, RequestOutput] = {}
        for it in out.items:
            # Already finished (postprocess raised after finishing it) when abort finds nothing.
            seq = self.scheduler.abort(it.seq.seq_id) or it.seq
            self.runner.release(seq.seq_id)
            failed[seq.seq_id] = _output(seq)
        self.stats.failed_steps += 1
        self.stats.failed_requests += len(failed)
        return list(failed.values())

    def _run(self, out: SchedulerOutput) -> list[RequestOutput]:
        t0, warm = time.perf_counter(), self.runner.warmup_s
        sampled = self.runner.execute(out)
        # One-time warm-up (graph capture) is not serving time.
        dt = time.perf_counter() - t0 - (self.runner.warmup_s - warm)
        self.stats.steps += 1
        self.stats.forward_s += dt
        self.stats.scheduled_tokens += out.num_tokens
        if self.adapt_prefill_rate:
            prefill = sum(it.num_tokens for it in out.items if it.num_tokens > 1 and not it.spec)
            if prefill >= out.num_tokens // 2:
                self.scheduler.ttl.observe_prefill(prefill, dt)
        if self.on_forward is not None:
            self.on_forward(out, dt)
        finished = self.scheduler.postprocess(out, sampled, self.clock.now())
        for seq in finished:
            self.runner.release(seq.seq_id)
        return [_output(s) for s in finished]

    def run_until_done(self) -> list[RequestOutput]:
        """Step until every added request finished (tests and offline batches)."""
        done: list[RequestOutput] = []
        while self.has_unfinished():
            done += self.step()
        return done
