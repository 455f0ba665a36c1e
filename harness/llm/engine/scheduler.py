"""Continuous-batching scheduler with program pins (pure Python, no torch).

Each step: expire pins; schedule running decodes, then running prefill chunks, then admit
waiting requests while the token budget and KV blocks last. Memory pressure drops pins first
(least likely to be reused in time first), then preempts the lowest-priority running
sequence (recompute: its blocks are freed, its tokens kept, it goes back to waiting).
The waiting queue is request FCFS, or program FCFS: pinned programs first, then by the
program's first arrival. With a `draft_len` (speculative decoding), a decoding sequence is
scheduled with room for the tokens a draft proposes; after the step, blocks past the verified
prefix go back to the pool, so the books stay exact whatever is rejected.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence as Seq

from harness.llm.engine.config import EngineConfig
from harness.llm.engine.kv import BlockManager, block_tokens, chain_hash, prefix_hashes
from harness.llm.engine.plan import (
    Accepted,
    Pin,
    Program,
    ScheduledSeq,
    SchedulerOutput,
    SchedulerStats,
    common_prefix,
)
from harness.llm.engine.sequence import EngineRequest, SeqState, Sequence
from harness.llm.engine.ttl import TtlPolicy

DraftLen = Callable[[Sequence], int]  # decoding sequence -> tokens to draft this step


class Scheduler:
    def __init__(
        self,
        config: EngineConfig,
        eos_token_ids: Seq[int] = (),
        draft_len: DraftLen | None = None,
    ) -> None:
        self.config = config
        self.draft_len = draft_len
        self.bm = BlockManager(
            config.num_blocks,
            config.block_size,
            caching=config.prefix_caching,
            num_cpu_blocks=config.num_cpu_blocks if config.offload else 0,
        )
        self.ttl = TtlPolicy(config)
        self.eos = frozenset(eos_token_ids)
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.pins: dict[str, Pin] = {}
        self.programs: dict[str, Program] = {}
        self.stats = SchedulerStats()
        self.max_len = min(config.max_model_len, config.num_blocks * config.block_size)
        self._pinned_programs_last_turn: set[str] = set()

    # -- requests ---------------------------------------------------------------------------
    def add(self, seq_id: int, request: EngineRequest, now: float) -> Sequence:
        if len(request.prompt_ids) == 0:
            raise ValueError("empty prompt")
        if len(request.prompt_ids) >= self.max_len:
            raise ValueError(f"prompt of {len(request.prompt_ids)} tokens >= {self.max_len}")
        pid = request.program_id
        program_arrival, rank, known = now, seq_id, 0
        if pid is not None:
            prog = self.programs.setdefault(pid, Program(first_arrival=now, rank=seq_id))
            program_arrival, rank = prog.first_arrival, prog.rank
            if prog.last_finish is not None:
                self.ttl.observe_gap(prog.last_tool, now - prog.last_finish)
                known = common_prefix(prog.last_tokens[: prog.last_computed], request.prompt_ids)
            if pid in self._pinned_programs_last_turn:
                self._pinned_programs_last_turn.discard(pid)
                self.stats.turns_after_pin += 1
                if pid in self.pins:
                    self.stats.pin_hits += 1
                    self.pins[pid].claimed = True
        seq = Sequence(seq_id, request, now, program_arrival, list(request.prompt_ids), rank)
        seq.known_len = known
        self.waiting.append(seq)
        return seq

    def abort(self, seq_id: int) -> Sequence | None:
        for queue in (self.waiting, self.running):
            for seq in queue:
                if seq.seq_id == seq_id:
                    queue.remove(seq)
                    self._release_blocks(seq)
                    seq.state, seq.finish_reason = SeqState.FINISHED, "abort"
                    return seq
        return None

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def next_expiry(self) -> float | None:
        return min((p.expiry for p in self.pins.values()), default=None)

    # -- scheduling -------------------------------------------------------------------------
    def _priority(self, seq: Sequence) -> tuple[float, float, int, float, int]:
        if self.config.use_program_fcfs:
            pinned = 0.0 if seq.program_id is not None and seq.program_id in self.pins else 1.0
            return (pinned, seq.program_arrival, seq.program_rank, seq.arrival, seq.seq_id)
        return (0.0, seq.arrival, seq.seq_id, seq.arrival, seq.seq_id)

    def _blocks_for(self, n_tokens: int) -> int:
        return math.ceil(n_tokens / self.config.block_size)

    def _final_blocks(self, seq: Sequence) -> int:
        return self._blocks_for(min(seq.prompt_len + seq.request.max_tokens, self.max_len))

    def schedule(self, now: float) -> SchedulerOutput:
        self.expire_pins(now)
        budget = self.config.max_batched_tokens
        items: list[ScheduledSeq] = []
        ordered = deque(
            sorted(self.running, key=lambda s: (not self._decoding(s), self._priority(s)))
        )
        kept: list[Sequence] = []
        preempted = False
        bs = self.config.block_size
        while ordered:
            seq = ordered.popleft()
            if budget == 0:
                kept.append(seq)
                continue
            n = min(len(seq.token_ids) - seq.num_computed, budget)
            spec, k = self._speculate(seq, n, budget)
            need = -(-(seq.num_computed + n + k) // bs) - len(seq.block_table)
            if need > 0:
                while self.bm.num_free < need and self._drop_pin(now, any_pin=True):
                    pass
                while self.bm.num_free < need:
                    preempted = True
                    if ordered:
                        victim = max(ordered, key=self._priority)
                        ordered.remove(victim)
                        self._preempt(victim)
                    else:
                        self._preempt(seq)
                        break
                if seq.state is not SeqState.RUNNING:
                    break
                seq.block_table += self.bm.allocate(need)
            items.append(self._item(seq, n, spec, k))
            budget -= n + k
            kept.append(seq)
        kept += ordered
        self.running = kept

        if not preempted:
            self.waiting.sort(key=self._priority)
            while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
                seq = self.waiting[0]
                if not self._admit(seq, now):
                    break
                self.waiting.pop(0)
                n = min(seq.num_tokens - seq.num_computed, budget)
                items.append(self._item(seq, n))
                budget -= n
                self.running.append(seq)
        self._account(items)
        return SchedulerOutput(tuple(items), tuple(self.bm.drain_ops()))

    @staticmethod
    def _item(seq: Sequence, n: int, spec: bool = False, draft: int = 0) -> ScheduledSeq:
        end = seq.num_computed + n == seq.num_tokens
        return ScheduledSeq(seq, seq.num_computed, n, end, spec, draft)

    def _decoding(self, seq: Sequence) -> bool:
        """Only the last token is pending (or, under speculation, the last two: a separate
        draft model lags one token behind after a round that accepted every draft)."""
        pending = seq.num_tokens - seq.num_computed
        if self.draft_len is None or pending != 2:
            return pending == 1
        return seq.num_tokens > seq.prompt_len + 1

    def _speculate(self, seq: Sequence, n: int, budget: int) -> tuple[bool, int]:
        """(speculative row?, tokens to draft) for a running sequence fed `n` tokens."""
        if self.draft_len is None or seq.num_computed + n != seq.num_tokens:
            return False, 0
        if not self._decoding(seq) or seq.num_tokens <= seq.prompt_len:
            return False, 0
        remaining = seq.request.max_tokens - seq.num_generated
        # Never past max_tokens or the window: the final-size reservation covers every draft.
        k = min(self.draft_len(seq), remaining, self.max_len - seq.num_tokens, budget - n)
        return True, max(0, k)

    def _account(self, items: Seq[ScheduledSeq]) -> None:
        for it in items:
            seq = it.seq
            if it.spec:
                self.stats.decode_tokens += it.num_tokens
                self.stats.draft_tokens += it.draft
                continue
            end = it.start + it.num_tokens
            decode = end == seq.num_tokens and seq.num_tokens - 1 >= seq.prompt_len
            prefill = it.num_tokens - (1 if decode else 0)
            self.stats.prefill_tokens += prefill
            self.stats.decode_tokens += 1 if decode else 0
            self.stats.recomputed_tokens += max(0, min(end, seq.known_len) - it.start)

    def _admit(self, seq: Sequence, now: float) -> bool:
        bs = self.config.block_size
        usable = seq.num_tokens - 1  # at least one token is always computed, for its logits
        hashes = prefix_hashes(seq.token_ids, bs, usable)
        toks = [block_tokens(seq.token_ids, bs, i) for i in range(len(hashes))]
        pin = self.pins.get(seq.program_id) if seq.program_id is not None else None
        total = self._blocks_for(seq.num_tokens)
        # Admission reserves room for every running sequence to reach max_tokens, so decodes
        # do not run into memory pressure later (preemption stays the exception).
        final = reserve = 0
        if self.config.reserve_decode:
            final = self._final_blocks(seq) - total
            reserve = sum(max(0, self._final_blocks(s) - len(s.block_table)) for s in self.running)
        while True:
            hits = self.bm.lookup(hashes, toks)
            gpu_hits = {h.block for h in hits if h.where == "gpu"}
            partial = self._partial_from_pin(pin, hits, seq, usable)
            taken = len(gpu_hits) + (1 if partial is not None else 0)
            available = self.bm.num_free - sum(self.bm.is_cached_free(b) for b in gpu_hits)
            if pin is not None:  # blocks the pin alone holds come back when it is released
                available += sum(
                    1
                    for b in pin.blocks
                    if self.bm.ref[b] == 1 and b not in gpu_hits and b != partial
                )
            if total - taken + final + reserve <= available:
                break
            if not self._drop_pin(now, any_pin=not self.running, keep=seq.program_id):
                return False
            pin = self.pins.get(seq.program_id) if seq.program_id is not None else None
        blocks = self.bm.take(hits)
        computed = len(hits) * bs
        if partial is not None and pin is not None:
            self.bm.share(partial)
            blocks.append(partial)
            computed = pin.num_computed
        if pin is not None:
            self._release_pin(pin, offload=False)
        blocks += self.bm.allocate(total - len(blocks))
        seq.block_table = blocks
        seq.block_hashes = hashes[: len(hits)]
        seq.num_computed = computed
        if seq.preemptions == 0:
            seq.num_cached = computed
            self.stats.cached_tokens += computed
        seq.state = SeqState.RUNNING
        return True

    def _partial_from_pin(
        self, pin: Pin | None, hits: Seq[object], seq: Sequence, usable: int
    ) -> int | None:
        """The pin's last, partly filled block, when the new prompt continues its tokens."""
        bs = self.config.block_size
        k = len(hits)
        if pin is None or len(pin.blocks) != k + 1 or pin.num_computed <= k * bs:
            return None
        if pin.num_computed > usable or pin.num_computed >= (k + 1) * bs:
            return None
        lo, hi = k * bs, pin.num_computed
        if pin.token_ids[lo:hi] != seq.token_ids[lo:hi]:
            return None
        return pin.blocks[k]

    # -- memory pressure --------------------------------------------------------------------
    def _drop_pin(self, now: float, *, any_pin: bool, keep: str | None = None) -> bool:
        """Release one pin under pressure, least likely to be reused in time first.

        With `any_pin` False only pins whose keep value is negative may go: a waiting request
        does not evict a pin that is worth more than the memory it holds.
        """
        candidates = []
        for pin in self.pins.values():
            if pin.program_id == keep or (pin.claimed and not any_pin):
                continue
            elapsed = now - pin.created
            if (
                not any_pin
                and self.ttl.keep_value(
                    pin.tool,
                    elapsed,
                    pin.ttl,
                    pin.num_computed,
                    len(pin.blocks),
                    self.config.num_blocks,
                )
                >= 0.0
            ):
                continue
            p = 1.0 if pin.claimed else self.ttl.reuse_probability(pin.tool, elapsed, pin.ttl)
            # Ties go to the youngest program (program FCFS).
            candidates.append((p, -pin.program_arrival, -pin.program_rank, pin))
        if not candidates:
            return False
        victim = min(candidates, key=lambda c: c[:3])[3]
        self._release_pin(victim, offload=True)
        self.stats.pins_evicted += 1
        return True

    def expire_pins(self, now: float) -> None:
        for pin in [p for p in self.pins.values() if p.expiry <= now]:
            self._release_pin(pin, offload=True)
            self.stats.pins_expired += 1

    def _release_pin(self, pin: Pin, *, offload: bool) -> None:
        del self.pins[pin.program_id]
        self.bm.free(pin.blocks, offload=offload)

    def _preempt(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        self._release_blocks(seq)
        seq.known_len = max(seq.known_len, seq.num_computed)
        seq.num_computed = 0
        seq.state = SeqState.WAITING
        seq.preemptions += 1
        self.stats.preemptions += 1
        self.waiting.append(seq)

    def _forget_stale_programs(self) -> None:
        """Programs that never sent `last_turn` (crashed trajectories) must not pile up."""
        excess = len(self.programs) - self.config.max_programs
        if excess <= 0:
            return
        live = {s.program_id for s in self.running} | {s.program_id for s in self.waiting}
        idle = sorted(
            (p.last_finish or p.first_arrival, pid)
            for pid, p in self.programs.items()
            if pid not in live and pid not in self.pins
        )
        for _, pid in idle[:excess]:
            del self.programs[pid]

    def _release_blocks(self, seq: Sequence, *, offload: bool = False) -> None:
        self.bm.free(seq.block_table, offload=offload)
        seq.block_table, seq.block_hashes = [], []

    # -- after the forward pass -------------------------------------------------------------
    def postprocess(
        self, out: SchedulerOutput, sampled: Seq[int | Accepted | None], now: float
    ) -> list[Sequence]:
        """Advance computed counts, append sampled (or accepted) tokens, finish and pin.
        Returns the sequences that finished."""
        finished: list[Sequence] = []
        bs = self.config.block_size
        for it, res in zip(out.items, sampled, strict=True):
            seq = it.seq
            if seq.state is not SeqState.RUNNING:
                continue
            if isinstance(res, Accepted):
                tokens, computed = res.tokens, res.computed
            else:
                tokens = (res,) if it.sample and res is not None else ()
                computed = it.start + it.num_tokens
            n, reason = self._finish_reason(seq, tokens)
            if n:
                seq.token_ids += tokens[:n]
                if seq.first_token_time is None:
                    seq.first_token_time = now
            # The last token is never computed (its logits come from feeding it next step).
            seq.num_computed = min(computed, seq.num_tokens - 1)
            full = seq.num_computed // bs
            while len(seq.block_hashes) < full:
                i = len(seq.block_hashes)
                parent = seq.block_hashes[-1] if seq.block_hashes else -1
                toks = block_tokens(seq.token_ids, bs, i)
                h = chain_hash(parent, toks)
                seq.block_hashes.append(h)
                self.bm.register(seq.block_table[i], h, toks)
            if it.spec:  # roll back: blocks past the verified prefix hold only rejected KV
                self._trim(seq)
            if reason is not None:
                self._finish(seq, reason, now)
                finished.append(seq)
        return finished

    def _trim(self, seq: Sequence) -> None:
        keep = self._blocks_for(seq.num_computed)
        if len(seq.block_table) > keep:
            extra = seq.block_table[keep:]
            del seq.block_table[keep:]
            self.bm.free(extra)  # never hashed (past num_computed), so straight to empty

    def _finish_reason(self, seq: Sequence, tokens: Seq[int]) -> tuple[int, str | None]:
        """How many of `tokens` the sequence appends, and why it finishes after them (None:
        it goes on). A stop (EOS, a stop id or a stop string) inside them drops the rest."""
        req = seq.request
        eos = () if req.ignore_eos else self.eos
        stop_ids = () if req.ignore_eos else req.stop_token_ids
        generated, total = seq.num_generated, seq.num_tokens
        n, reason = len(tokens), None
        for i, tok in enumerate(tokens):
            if tok in eos or tok in stop_ids:
                n, reason = i + 1, "stop"
                break
            if generated + i + 1 >= req.max_tokens or total + i + 1 >= self.max_len:
                n, reason = i + 1, "length"
                break
        if seq.stop is not None and n:
            j = seq.stop.feed(tokens[:n])
            if j is not None:  # a stop string completes first (or with the last token)
                return j + 1, "stop"
        return n, reason

    def _finish(self, seq: Sequence, reason: str, now: float) -> None:
        self.running.remove(seq)
        seq.state, seq.finish_reason, seq.finish_time = SeqState.FINISHED, reason, now
        pid, req = seq.program_id, seq.request
        if pid is None:
            self._release_blocks(seq)
            return
        prog = self.programs.get(pid)
        if req.last_turn or prog is None:
            self.programs.pop(pid, None)
            self._release_blocks(seq)
            return
        prog.last_finish, prog.last_tool = now, req.next_tool
        prog.last_tokens, prog.last_computed = seq.token_ids, seq.num_computed
        self._forget_stale_programs()
        ttl = 0.0
        if self.config.pins:
            demand = sum(self._blocks_for(s.num_tokens) for s in self.waiting)
            pressure = (self.bm.num_used + demand) / self.config.num_blocks
            ttl = self.ttl.ttl(
                req.next_tool,
                seq.num_computed,
                len(seq.block_table),
                self.config.num_blocks,
                pressure,
            )
        if ttl <= 0.0:  # not worth pinning; with a CPU tier it may still come back from there
            self._release_blocks(seq, offload=True)
            return
        old = self.pins.get(pid)
        if old is not None:
            self._release_pin(old, offload=True)
        self.pins[pid] = Pin(
            pid,
            seq.block_table,
            seq.token_ids,
            seq.num_computed,
            req.next_tool,
            now,
            ttl,
            program_arrival=seq.program_arrival,
            program_rank=seq.program_rank,
        )
        self._pinned_programs_last_turn.add(pid)
        self.stats.pins_created += 1
        seq.block_table, seq.block_hashes = [], []
