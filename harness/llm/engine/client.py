"""`EngineLLM`: the in-process engine behind the `harness.llm.base.LLM` chat protocol.

A background thread owns the engine and steps it while any request is live, so concurrent
`chat()` calls from many programs share each forward pass. Results return to the caller's
event loop through `call_soon_threadsafe`; the thread sleeps when there is nothing to do.
`stream()` also gets a request's new token ids after every step that added some, and turns
them into text deltas on the caller's side, decoding only the last few tokens each time (the
engine thread never detokenizes for streams; it decodes new tokens incrementally only for
requests with stop strings).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from collections.abc import Sequence as Seq
from typing import Any

import torch

from harness.errors import ContextTooLong, LLMError
from harness.llm.base import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    Message,
    TextDelta,
    Usage,
)
from harness.llm.engine.clock import Clock
from harness.llm.engine.config import EngineConfig, SpecConfig
from harness.llm.engine.engine import Engine, RequestOutput, StepError
from harness.llm.engine.runner import ModelRunner
from harness.llm.engine.scheduler import DraftLen
from harness.llm.engine.sequence import EngineRequest, SamplingParams, StopFn
from harness.llm.engine.spec_policy import SpecStats
from harness.llm.engine.speculative import SpeculativeRunner, speculative_runner
from harness.llm.local import SEED_RANGE
from harness.llm.stops import IncrementalDetokenizer, StopScanner, StopStrings

Deliver = Callable[[RequestOutput | BaseException], None]
Progress = Callable[[tuple[int, ...]], None]  # token ids generated since the last call
log = logging.getLogger(__name__)
LOG_EVERY_S = 30.0  # speculation statistics go to the log at most this often (and at close)
UNHEALTHY_AFTER = 3  # failed steps in a row after which `health()` reports the engine broken


def encode_chat(tokenizer: Any, messages: Seq[Message]) -> list[int]:
    """Prompt ids through the tokenizer's chat template (a plain transcript when it has none)."""
    msgs = [{"role": m.role, "content": m.content} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if isinstance(out, Mapping) or hasattr(out, "keys"):
            out = out["input_ids"]
        return [int(t) for t in out]
    text = "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:"
    return [int(t) for t in tokenizer.encode(text)]


def make_stop_fn(tokenizer: Any, stops: Seq[str]) -> StopFn | None:
    """A stop-string checker per sequence: decodes each step's new tokens incrementally and
    looks for the stop strings in them plus the tail before them."""
    stops = tuple(s for s in stops if s)
    if not stops:
        return None
    return lambda: StopStrings(tokenizer, stops)


def cut_at_stop(text: str, stops: Seq[str]) -> tuple[str, bool]:
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    ids: set[int] = set()
    gen_cfg = getattr(model, "generation_config", None)
    for src in (getattr(gen_cfg, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, list | tuple):
            ids.update(int(t) for t in src)
    return tuple(sorted(ids))


class EngineLLM:
    """An `LLM` served by the in-process engine; takes a loaded model and its tokenizer.

    The engine takes the model over: its attention implementation is switched to the paged
    one, and a KV cache of `config.num_blocks` blocks is allocated on the model's device.
    With `speculation`, `draft_model` (or, without one, the target's first
    `self_draft_layers` layers) drafts tokens or steps that the target verifies; with
    `lookup`, no model drafts: the continuation of an earlier occurrence of each sequence's
    last tokens does (suffix.py).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        config: EngineConfig | None = None,
        model_name: str | None = None,
        clock: Clock | None = None,
        speculation: SpecConfig | None = None,
        draft_model: torch.nn.Module | None = None,
        self_draft_layers: int | None = None,
        lookup: bool = False,
    ) -> None:
        self.config = config or EngineConfig()
        self._tokenizer = tokenizer
        cfg: Any = getattr(model, "config", None)
        self._name = model_name or str(
            getattr(cfg, "_name_or_path", "") or getattr(cfg, "model_type", "") or "local"
        )
        runner: ModelRunner | SpeculativeRunner
        draft_len: DraftLen | None = None
        self._spec: SpeculativeRunner | None = None
        if speculation is None:
            runner = ModelRunner(model, self.config)
        else:
            runner = self._spec = speculative_runner(
                model,
                self.config,
                speculation,
                draft_model=draft_model,
                self_draft_layers=self_draft_layers,
                lookup=lookup,
            )
            draft_len = runner.policy.draft_len
        self.engine = Engine(
            runner,
            self.config,
            eos_token_ids=eos_ids(model, tokenizer),
            clock=clock,
            draft_len=draft_len,
        )
        self._last_log = time.monotonic()
        self._cv = threading.Condition()
        self._incoming: list[tuple[int, EngineRequest, Deliver, Progress | None]] = []
        self._aborts: list[int] = []
        self._pending: dict[int, tuple[int, Deliver]] = {}  # engine id -> (key, deliver)
        self._progress: dict[int, tuple[Progress, int]] = {}  # engine id -> (callback, sent)
        self._ids: dict[int, int] = {}  # key -> engine id
        self._keys = itertools.count()
        self._stopping = False
        self._failure: BaseException | None = None
        self._failed_in_row = 0  # engine steps that raised since the last one that did not
        self._step_error: BaseException | None = None  # the latest step's failure
        self._thread: threading.Thread | None = None

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return int(self.engine.scheduler.max_len)

    def health(self) -> str | None:
        """None while the engine can serve; otherwise why it cannot."""
        with self._cv:
            if self._failure is not None:
                return f"the engine loop failed: {self._failure!r}"
            if self._stopping:
                return "the engine is closed"
            if self._failed_in_row >= UNHEALTHY_AFTER:
                return f"the last {self._failed_in_row} engine steps failed: {self._step_error!r}"
        return None

    def speculation_stats(self) -> SpecStats | None:
        """Speculation counters so far (None when the engine does not speculate)."""
        return self._spec.stats() if self._spec is not None else None

    def _log_spec(self, force: bool = False) -> None:
        stats = self.speculation_stats()
        now = time.monotonic()
        if stats is None or (not force and now - self._last_log < LOG_EVERY_S):
            return
        self._last_log = now
        if stats.mode == "step":
            log.info(
                "%s step speculation: %d steps scored, %d accepted, %d rejected "
                "(rate %.3f at alpha %s), %d resampled; tokens: %d draft, %d target",
                self._name,
                stats.steps_scored,
                stats.steps_accepted,
                stats.steps_rejected,
                stats.rejection_rate,
                stats.alpha,
                stats.resamples,
                stats.draft_tokens,
                stats.target_tokens,
            )
        else:
            log.info(
                "%s token speculation: %d rounds, %d/%d drafts accepted (%.3f); "
                "tokens: %d draft, %d target",
                self._name,
                stats.rounds,
                stats.accepted,
                stats.drafted,
                stats.acceptance_rate,
                stats.draft_tokens,
                stats.target_tokens,
            )

    async def __aenter__(self) -> EngineLLM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the protocol -----------------------------------------------------------------------
    async def chat(self, request: ChatRequest) -> ChatResponse:
        t0 = time.monotonic()
        ereq = self._request(request)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[RequestOutput] = loop.create_future()

        def deliver(result: RequestOutput | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                loop.call_soon_threadsafe(_resolve, fut, result)

        key = self._submit(ereq, deliver)
        try:
            out = await fut
        except asyncio.CancelledError:
            self._abort(key)
            raise
        text = self._tokenizer.decode(list(out.token_ids), skip_special_tokens=True)
        text, hit = cut_at_stop(text, request.stop)
        return self._response(out, text, hit, t0)

    async def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | ChatResponse]:
        """Text deltas as steps add tokens (held back where a stop string may be starting),
        then the response. Closing the iterator early aborts the request."""
        t0 = time.monotonic()
        ereq = self._request(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, ...] | RequestOutput | BaseException] = asyncio.Queue()

        def put(item: tuple[int, ...] | RequestOutput | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                loop.call_soon_threadsafe(queue.put_nowait, item)

        key = self._submit(ereq, put, put)
        scanner = StopScanner(request.stop)
        detok = IncrementalDetokenizer(self._tokenizer)
        seen = 0
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, RequestOutput):
                    finished = True
                    break
                seen += len(item)
                delta = scanner.push(detok.push(item))
                if delta:
                    yield TextDelta(delta)
        finally:
            if not finished:
                self._abort(key)
        tail = detok.push(item.token_ids[seen:]) + detok.flush()
        delta = scanner.push(tail)
        text, rest = scanner.finish_pushed()
        if delta + rest:
            yield TextDelta(delta + rest)
        yield self._response(item, text, scanner.stopped, t0)

    def _request(self, request: ChatRequest) -> EngineRequest:
        prompt = encode_chat(self._tokenizer, request.messages)
        limit = self.engine.scheduler.max_len
        if len(prompt) >= limit:
            raise ContextTooLong(
                f"prompt is {len(prompt)} tokens but {self._name}'s context window is "
                f"{limit} tokens",
                hint="shorten the messages (less context, truncated tool output), or raise "
                "max_model_len / the KV cache size",
            )
        s = request.sampling
        if s.seed is not None and not SEED_RANGE[0] <= s.seed <= SEED_RANGE[1]:
            low, high = SEED_RANGE
            raise LLMError(f"seed {s.seed} is out of range", hint=f"use one in [{low}, {high}]")
        return EngineRequest(
            prompt_ids=tuple(prompt),
            max_tokens=max(1, min(s.max_tokens, limit - len(prompt))),  # room left in the window
            sampling=SamplingParams(s.temperature, s.top_p, s.seed),
            stop_fn=make_stop_fn(self._tokenizer, request.stop),
            program_id=request.program_id,
            last_turn=request.last_turn,
            next_tool=request.next_tool,
        )

    def _response(self, out: RequestOutput, text: str, hit: bool, t0: float) -> ChatResponse:
        finish: FinishReason = "stop" if hit or out.finish_reason == "stop" else "length"
        return ChatResponse(
            text=text,
            finish_reason=finish,
            usage=Usage(out.prompt_tokens, len(out.token_ids)),
            latency_s=time.monotonic() - t0,
            model=self.model_name,
        )

    async def aclose(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self._fail_all(LLMError("the engine was closed"))
        self._log_spec(force=True)

    # -- the background loop ----------------------------------------------------------------
    def _submit(
        self, req: EngineRequest, deliver: Deliver, progress: Progress | None = None
    ) -> int:
        with self._cv:
            if self._stopping or self._failure is not None:
                raise LLMError("the engine is closed", hint=str(self._failure or ""))
            key = next(self._keys)
            self._incoming.append((key, req, deliver, progress))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="harness-engine", daemon=True
                )
                self._thread.start()
            self._cv.notify_all()
            return key

    def _abort(self, key: int) -> None:
        with self._cv:
            self._incoming = [x for x in self._incoming if x[0] != key]
            self._aborts.append(key)
            self._cv.notify_all()

    def _loop(self) -> None:
        incoming: list[tuple[int, EngineRequest, Deliver, Progress | None]] = []
        try:
            while True:
                with self._cv:
                    while not (
                        self._stopping
                        or self._incoming
                        or self._aborts
                        or self.engine.has_unfinished()
                    ):
                        self._cv.wait()
                    if self._stopping:
                        return
                    incoming, self._incoming = self._incoming, []
                    aborts, self._aborts = self._aborts, []
                for key, req, deliver, progress in incoming:
                    try:
                        rid = self.engine.add_request(req)
                    except ValueError as e:
                        deliver(ContextTooLong(str(e)))
                        continue
                    self._pending[rid] = (key, deliver)
                    self._ids[key] = rid
                    if progress is not None:
                        self._progress[rid] = (progress, 0)
                for key in aborts:
                    if key in self._ids:
                        rid = self._ids.pop(key)
                        self.engine.abort(rid)
                        self._pending.pop(rid, None)
                        self._progress.pop(rid, None)
                if self.engine.has_unfinished():
                    for out in self._step():
                        key, deliver = self._pending.pop(out.request_id)
                        self._ids.pop(key, None)
                        self._progress.pop(out.request_id, None)
                        deliver(out)
                    if self._progress:
                        self._report_progress()
                    self._log_spec()
        except BaseException as e:  # outside a step (those fail alone): fail all in flight
            with self._cv:
                self._failure = e
                # Taken off the queue but not in the engine yet: they fail too.
                self._incoming[:0] = [x for x in incoming if x[0] not in self._ids]
            self._fail_all(LLMError(f"the engine loop failed: {e!r}"))

    def _step(self) -> list[RequestOutput]:
        """One engine step; a failed one fails its own requests and the loop goes on."""
        try:
            done = self.engine.step()
        except StepError as e:
            cause = e.__cause__ or e
            log.error("%s: an engine step failed: %r", self._name, cause, exc_info=cause)
            with self._cv:
                self._failed_in_row += 1
                self._step_error = cause
            for out in e.failed:
                entry = self._pending.pop(out.request_id, None)
                self._progress.pop(out.request_id, None)
                if entry is None:
                    continue
                self._ids.pop(entry[0], None)
                entry[1](
                    LLMError(
                        f"the engine step serving this request failed: {cause!r}",
                        hint="the engine goes on serving other requests; retry, and report it "
                        "if the same request fails again",
                    )
                )
            return []
        if self._failed_in_row:
            with self._cv:
                self._failed_in_row = 0
        return done

    def _report_progress(self) -> None:
        for seq in self.engine.scheduler.running:
            entry = self._progress.get(seq.seq_id)
            if entry is None:
                continue
            progress, sent = entry
            n = seq.num_generated
            if n > sent:  # only the new ids: a stream costs O(its length), not O(length^2)
                self._progress[seq.seq_id] = (progress, n)
                progress(tuple(seq.token_ids[seq.prompt_len + sent :]))

    def _fail_all(self, error: LLMError) -> None:
        pending = list(self._pending.values())
        self._pending.clear()
        self._progress.clear()
        with self._cv:
            pending += [(k, d) for k, _, d, _ in self._incoming]
            self._incoming = []
        for _, deliver in pending:
            deliver(error)


def _resolve(fut: asyncio.Future[RequestOutput], result: RequestOutput | BaseException) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)
