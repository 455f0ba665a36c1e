"""Speculative execution of a scheduled step: the draft proposes, the target verifies.

For the speculative rows of a step (decoding sequences, `ScheduledSeq.spec`), the draft runs
`max(draft)` batched row steps: the first feeds each row's pending tokens, each later one the
token drafted before. The target then feeds every row's pending tokens plus its drafts in ONE
batched pass (rows of `pending + draft` tokens), together with the step's prefill chunks and
plain decodes, and keeps the logits at every draft position and one past the last. Token-level
rows are verified by rejection sampling (greedy: longest prefix matching the target's argmax);
step-level rows get the target's negative log-likelihood of each draft token. The policy
(`spec_policy.py`, pure Python) turns that into the tokens each row appends.

KV books: a row's positions are valid in a cache once fed with the token that stays there.
The target fed the pending tokens and every draft; a separate draft fed the pending tokens and
all drafts but the last (a self-draft's cache is the target's, rewritten by the verify pass).
So after a row appends tokens whose first `c` equal its drafts, the valid prefix is
`start + pending + c` for the target and `start + pending + min(c, draft - 1)` for a separate
draft; the row's `Accepted.computed` is the smaller, and the scheduler frees blocks past it.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from harness.llm.engine.config import EngineConfig, SpecConfig
from harness.llm.engine.draft import (
    align_vocab,
    default_self_draft_layers,
    self_draft,
    vocab_size,
)
from harness.llm.engine.plan import Accepted, ScheduledSeq, SchedulerOutput
from harness.llm.engine.rows import Rows, row_tokens
from harness.llm.engine.runner import ModelRunner
from harness.llm.engine.sampling import draw, processed_probs, rejection_sample, sample
from harness.llm.engine.sequence import SamplingParams
from harness.llm.engine.spec_policy import (
    RowResult,
    SpecPolicy,
    SpecStats,
    StepPolicy,
    TokenPolicy,
)


@dataclass
class _Proposal:
    drafts: torch.Tensor  # [rows, max draft] token ids on the device
    q: dict[int, list[torch.Tensor]]  # row -> the draft's distribution at each draft position


class SpeculativeRunner:
    """The engine's `Runner` over a target runner, a draft runner and a policy."""

    def __init__(self, target: ModelRunner, draft: ModelRunner, policy: SpecPolicy) -> None:
        self.target = target
        self.draft = draft
        self.policy = policy
        self.shared = not draft.owns_kv  # a self-draft: its KV is the target's first layers
        self.vocab = vocab_size(target.model)
        self.draft_forwards = 0
        self.verify_forwards = 0

    @property
    def warmup_s(self) -> float:
        return self.target.warmup_s + self.draft.warmup_s

    def stats(self) -> SpecStats:
        return self.policy.stats()

    def release(self, seq_id: int) -> None:
        self.target.release(seq_id)
        self.policy.release(seq_id)

    def execute(self, out: SchedulerOutput) -> list[int | Accepted | None]:
        self.target.copy_blocks(out.copy_ops)
        if not self.shared:
            self.draft.copy_blocks(out.copy_ops)
        if not out.items:
            return []
        spec = [it for it in out.items if it.spec]
        decodes = [it for it in out.items if not it.spec and it.num_tokens == 1]
        prefills = [it for it in out.items if not it.spec and it.num_tokens > 1]
        with torch.inference_mode():
            prop = self._propose(spec, decodes, prefills)
            spec_logits, plain_logits = self._verify(spec, decodes, prefills, prop)
            results = self._spec_results(spec, spec_logits, prop)
        plain = [it for it in (*decodes, *prefills) if it.sample]
        if plain:
            params = [it.seq.request.sampling for it in plain]
            gens = [
                self.target.generator(it.seq.seq_id, p.seed)
                for it, p in zip(plain, params, strict=True)
            ]
            tokens = sample(plain_logits, params, gens)
            for it, tok in zip(plain, tokens, strict=True):
                results[it.seq.seq_id] = tok
                self.policy.observe_plain(it.seq, tok)
        return [results.get(it.seq.seq_id) for it in out.items]

    # -- the draft --------------------------------------------------------------------------
    def _propose(
        self, spec: list[ScheduledSeq], decodes: list[ScheduledSeq], prefills: list[ScheduledSeq]
    ) -> _Proposal:
        dev = self.target.device
        ks = [it.draft for it in spec]
        kmax = max(ks, default=0)
        prop = _Proposal(torch.zeros(len(spec), kmax, dtype=torch.long, device=dev), {})
        mirror = not self.shared  # a separate draft computes every position the target does
        if kmax == 0 and not mirror:
            return prop
        params = [self.policy.draft_params(it.seq) for it in spec]
        keep_q = [
            not p.greedy and not self.policy.scored(it.seq, it.draft)
            for it, p in zip(spec, params, strict=True)
        ]
        first = spec + (decodes if mirror else [])
        rows = self.draft.rows_of(first)
        ids = row_tokens(
            [it.seq.token_ids[it.start : it.start + it.num_tokens] for it in first],
            rows.q if rows else 1,
        )
        keep = rows.last_index()[: len(spec)] if rows else []
        logits, _ = self.draft.forward(rows, ids, prefills if mirror else [], keep)
        self.draft_forwards += 1
        if kmax == 0:
            return prop
        tables = tuple(tuple(it.seq.block_table) for it in spec)
        for j in range(kmax):
            if j:
                step = Rows(
                    starts=tuple(it.start + it.num_tokens + j - 1 for it in spec),
                    lengths=tuple(1 if j < k else 0 for k in ks),
                    tables=tables,
                    q=1,
                )
                prev = prop.drafts[:, j - 1 : j]
                logits, _ = self.draft.forward(step, prev, [], range(len(spec)))
                self.draft_forwards += 1
            prop.drafts[:, j] = self._draft_tokens(logits, spec, params, keep_q, prop, j)
        return prop

    def _draft_tokens(
        self,
        logits: torch.Tensor,
        spec: list[ScheduledSeq],
        params: list[SamplingParams],
        keep_q: list[bool],
        prop: _Proposal,
        j: int,
    ) -> torch.Tensor:
        logits = align_vocab(logits.float(), self.vocab)
        tokens = logits.argmax(-1)
        for b, (it, p) in enumerate(zip(spec, params, strict=True)):
            if p.greedy or j >= it.draft:
                continue
            probs = processed_probs(logits[b], p)
            tokens[b] = draw(probs[None], self.target.generator(it.seq.seq_id, p.seed))[0]
            if keep_q[b]:
                prop.q.setdefault(b, []).append(probs)
        return tokens

    # -- the target -------------------------------------------------------------------------
    def _verify(
        self,
        spec: list[ScheduledSeq],
        decodes: list[ScheduledSeq],
        prefills: list[ScheduledSeq],
        prop: _Proposal,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits at every draft position + one past, per spec row in order; logits of the
        plain items that sample: decodes, then prefill chunks)."""
        items = spec + decodes
        rows = self.target.rows_of(items, [it.draft for it in spec] + [0] * len(decodes))
        if rows is None:
            _, pre = self.target.forward(None, [], prefills, [])
            self.verify_forwards += 1
            return pre[:0], pre
        q = rows.q
        pending = [it.seq.token_ids[it.start : it.start + it.num_tokens] for it in items]
        host = row_tokens(pending, q)
        ids = torch.tensor(host, dtype=torch.long).view(rows.batch, q).to(self.target.device)
        at_rows, at_cols, src_cols = [], [], []
        keep: list[int] = []
        for b, it in enumerate(spec):
            for j in range(it.draft):
                at_rows.append(b)
                at_cols.append(it.num_tokens + j)
                src_cols.append(j)
            keep += [b * q + it.num_tokens - 1 + j for j in range(it.draft + 1)]
        if at_rows:
            r = torch.tensor(at_rows, device=ids.device)
            ids[r, torch.tensor(at_cols, device=ids.device)] = prop.drafts[
                r, torch.tensor(src_cols, device=ids.device)
            ]
        n_spec = len(keep)
        keep += [(len(spec) + i) * q for i, it in enumerate(decodes) if it.sample]
        logits, pre = self.target.forward(rows, ids, prefills, keep)
        self.verify_forwards += 1
        return logits[:n_spec], torch.cat([logits[n_spec:], pre])

    def _spec_results(
        self, spec: list[ScheduledSeq], logits: torch.Tensor, prop: _Proposal
    ) -> dict[int, int | Accepted]:
        scored = [self.policy.scored(it.seq, it.draft) for it in spec]
        step_drafts = [it.draft for it, s in zip(spec, scored, strict=True) if s]
        self.policy.end_step(max(step_drafts, default=0))
        if not spec:
            return {}
        logits = logits.float()
        argmax = logits.argmax(-1)
        offsets: list[int] = []
        at = 0
        for it in spec:
            offsets.append(at)
            at += it.draft + 1
        nll = self._nll(spec, logits, prop, scored, offsets)
        host_argmax, host_drafts = argmax.tolist(), prop.drafts.tolist()
        out: dict[int, int | Accepted] = {}
        for b, it in enumerate(spec):
            k, o = it.draft, offsets[b]
            drafts = tuple(int(t) for t in host_drafts[b][:k])
            params = it.seq.request.sampling
            gen = self.target.generator(it.seq.seq_id, params.seed)
            if scored[b]:
                first = host_argmax[o]
                if not params.greedy:
                    first = int(draw(processed_probs(logits[o : o + 1], params), gen)[0].item())
                row = RowResult(drafts, nll=tuple(nll.get(b, ())), first_token=first)
            elif params.greedy:
                m = 0
                while m < k and drafts[m] == host_argmax[o + m]:
                    m += 1
                row = RowResult(drafts, accepted=m, next_token=host_argmax[o + m])
            else:
                p = processed_probs(logits[o : o + k + 1], params)
                q = torch.stack(prop.q[b]) if k else p[:0]
                m, nxt = rejection_sample(p, q, prop.drafts[b, :k], gen)
                row = RowResult(drafts, accepted=m, next_token=nxt)
            tokens = self.policy.decide(it.seq, row)
            out[it.seq.seq_id] = Accepted(tokens, self._computed(it, drafts, tokens))
        return out

    def _nll(
        self,
        spec: list[ScheduledSeq],
        logits: torch.Tensor,
        prop: _Proposal,
        scored: list[bool],
        offsets: list[int],
    ) -> dict[int, list[float]]:
        """Target negative log-likelihood of each draft token of the scored rows."""
        rows = [b for b, s in enumerate(scored) if s]
        if not rows:
            return {}
        pos = [offsets[b] + j for b in rows for j in range(spec[b].draft)]
        tok_rows = [b for b in rows for _ in range(spec[b].draft)]
        tok_cols = [j for b in rows for j in range(spec[b].draft)]
        dev = logits.device
        sel = logits[torch.tensor(pos, device=dev)]
        toks = prop.drafts[torch.tensor(tok_rows, device=dev), torch.tensor(tok_cols, device=dev)]
        values = (torch.logsumexp(sel, -1) - sel.gather(-1, toks[:, None])[:, 0]).tolist()
        out: dict[int, list[float]] = {}
        for b, v in zip(tok_rows, values, strict=True):
            out.setdefault(b, []).append(float(v))
        return out

    def _computed(self, it: ScheduledSeq, drafts: Seq[int], tokens: Seq[int]) -> int:
        c = 0
        while c < len(drafts) and c < len(tokens) and tokens[c] == drafts[c]:
            c += 1
        base = it.start + it.num_tokens
        if self.shared:
            return base + c
        return base + min(c, max(it.draft - 1, 0))


def speculative_runner(
    target_model: torch.nn.Module,
    config: EngineConfig,
    spec: SpecConfig,
    *,
    draft_model: torch.nn.Module | None = None,
    self_draft_layers: int | None = None,
) -> SpeculativeRunner:
    """Runners for a target and its draft (a second model, or the target's first layers)."""
    target = ModelRunner(target_model, config)
    if draft_model is None:
        layers = self_draft_layers or default_self_draft_layers(target_model)
        view = self_draft(target_model, layers)
        draft = ModelRunner(view, config, shared_kv=target.kv[:layers])
    else:
        draft = ModelRunner(draft_model, config)
    policy: SpecPolicy = StepPolicy(spec) if spec.step_level else TokenPolicy(spec)
    return SpeculativeRunner(target, draft, policy)
