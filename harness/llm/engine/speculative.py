"""Speculative execution of a scheduled step: a drafter proposes, the target verifies.

For the speculative rows of a step (decoding sequences, `ScheduledSeq.spec`), drafts come from
a lookup (`suffix.LookupPolicy`: the continuation of an earlier occurrence of the row's last
tokens, no model; a point mass) or from a draft model, which runs `max(draft)` batched row
steps: the first feeds each row's pending tokens, each later one the token drafted before. The
target then feeds every row's pending tokens plus its drafts in ONE batched pass (rows of
`pending + draft` tokens), together with the step's prefill chunks and plain decodes, and keeps
the logits at every draft position and one past the last. Token-level rows are verified on the
device in one batched call (`sampling.verify`: greedy, the longest prefix matching the target's
argmax; sampled, rejection sampling); step-level rows get the target's negative log-likelihood
of each draft token. One device-to-host read brings every row's result back; the policy
(`spec_policy.py`, pure Python) turns it into the tokens each row appends.

KV books: a row's positions are valid in a cache once fed with the token that stays there.
The target fed the pending tokens and every draft; a separate draft model fed the pending
tokens and all drafts but the last (a self-draft's cache is the target's, rewritten by the
verify pass; a lookup has no cache). So after a row appends tokens whose first `c` equal its
drafts, the valid prefix is `start + pending + c` for the target and `start + pending +
min(c, draft - 1)` for a separate draft; the row's `Accepted.computed` is the smaller, and the
scheduler frees blocks past it.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

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
from harness.llm.engine.sampling import SampleSpec, VerifySpec, sample, sample_with_probs, verify
from harness.llm.engine.sequence import SamplingParams
from harness.llm.engine.spec_policy import (
    RowResult,
    SpecPolicy,
    SpecStats,
    StepPolicy,
    TokenPolicy,
)
from harness.llm.engine.suffix import LookupPolicy

GREEDY = SamplingParams()


@dataclass
class _Proposal:
    drafts: torch.Tensor  # [rows, max draft] token ids on the device
    q: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # row -> q at each draft


class SpeculativeRunner:
    """The engine's `Runner` over a target runner, a draft (a model runner, or None for
    lookup drafts) and a policy."""

    def __init__(self, target: ModelRunner, draft: ModelRunner | None, policy: SpecPolicy) -> None:
        if draft is None and not isinstance(policy, LookupPolicy):
            raise ValueError("lookup drafting needs a LookupPolicy")
        self.target = target
        self.draft = draft
        self.policy = policy
        self.lookup = policy if isinstance(policy, LookupPolicy) and draft is None else None
        self.shared = draft is None or not draft.owns_kv  # no separate cache: never lags
        self.vocab = vocab_size(target.model)
        self.draft_forwards = 0
        self.verify_forwards = 0

    @property
    def warmup_s(self) -> float:
        return self.target.warmup_s + (self.draft.warmup_s if self.draft else 0.0)

    def stats(self) -> SpecStats:
        return self.policy.stats()

    def release(self, seq_id: int) -> None:
        self.target.release(seq_id)
        self.policy.release(seq_id)

    def execute(self, out: SchedulerOutput) -> list[int | Accepted | None]:
        self.target.copy_blocks(out.copy_ops)
        if self.draft is not None and not self.shared:
            self.draft.copy_blocks(out.copy_ops)
        if not out.items:
            return []
        spec = [it for it in out.items if it.spec]
        decodes = [it for it in out.items if not it.spec and it.num_tokens == 1]
        prefills = [it for it in out.items if not it.spec and it.num_tokens > 1]
        with torch.inference_mode():
            if self.lookup is not None:
                lookup = self.lookup
                drafts = [lookup.proposal(it.seq.seq_id)[: it.draft] for it in spec]
                results = self._verify(spec, decodes, prefills, drafts, None)
            else:
                prop = self._propose(spec, decodes, prefills)
                results = self._verify(spec, decodes, prefills, None, prop)
        return [results.get(it.seq.seq_id) for it in out.items]

    # -- a draft model ----------------------------------------------------------------------
    def _propose(
        self, spec: list[ScheduledSeq], decodes: list[ScheduledSeq], prefills: list[ScheduledSeq]
    ) -> _Proposal:
        draft = self.draft
        assert draft is not None
        dev = self.target.device
        ks = [it.draft for it in spec]
        kmax = max(ks, default=0)
        prop = _Proposal(torch.zeros(len(spec), kmax, dtype=torch.long, device=dev))
        mirror = not self.shared  # a separate draft computes every position the target does
        if kmax == 0 and not mirror:
            return prop
        params = [self.policy.draft_params(it.seq) for it in spec]
        keep_q = [
            not p.greedy and not self.policy.scored(it.seq, it.draft)
            for it, p in zip(spec, params, strict=True)
        ]
        first = spec + (decodes if mirror else [])
        rows = Rows.of(first)
        ids = row_tokens(
            [it.seq.token_ids[it.start : it.start + it.num_tokens] for it in first],
            rows.q if rows else 1,
        )
        keep = rows.last_index()[: len(spec)] if rows else []
        sspec = self._draft_spec(spec, params, 0)
        sspec.stage(draft.staging)
        logits, _, staged = draft.forward(rows, ids, prefills if mirror else [], keep)
        self.draft_forwards += 1
        if kmax == 0:
            return prop
        for j in range(kmax):
            if j:
                step = Rows(
                    seqs=tuple(it.seq for it in spec),
                    starts=tuple(it.start + it.num_tokens + j - 1 for it in spec),
                    lengths=tuple(1 if j < k else 0 for k in ks),
                    q=1,
                )
                sspec = self._draft_spec(spec, params, j)
                sspec.stage(draft.staging)
                prev = prop.drafts[:, j - 1 : j]
                logits, _, staged = draft.forward(step, prev, [], range(len(spec)))
                self.draft_forwards += 1
            sspec.bind(staged)
            tokens, probs = sample_with_probs(align_vocab(logits.float(), self.vocab), sspec)
            prop.drafts[:, j] = tokens
            if probs is not None:
                for i, b in enumerate(sspec.sampled):
                    if keep_q[b]:
                        prop.q.setdefault(b, []).append(probs[i])
        return prop

    def _draft_spec(
        self, spec: list[ScheduledSeq], params: list[SamplingParams], j: int
    ) -> SampleSpec:
        """Draft step j samples the rows that draft at least j + 1 tokens with their params."""
        use = [p if j < it.draft else GREEDY for it, p in zip(spec, params, strict=True)]
        keys: list[int] = []
        counters: list[int] = []
        for it, p in zip(spec, use, strict=True):
            if not p.greedy:
                key, c = self.target.streams.take(it.seq.seq_id, p.seed, 1)
                keys.append(key)
                counters.append(c)
        return SampleSpec(use, keys, counters)

    # -- the target -------------------------------------------------------------------------
    def _verify(
        self,
        spec: list[ScheduledSeq],
        decodes: list[ScheduledSeq],
        prefills: list[ScheduledSeq],
        host_drafts: list[tuple[int, ...]] | None,
        prop: _Proposal | None,
    ) -> dict[int, int | Accepted]:
        target, policy = self.target, self.policy
        scored = [policy.scored(it.seq, it.draft) for it in spec]
        policy.end_step(max((it.draft for it, s in zip(spec, scored, strict=True) if s), default=0))
        items = spec + decodes
        rows = Rows.of(items, [it.draft for it in spec] + [0] * len(decodes))
        st = target.staging
        # Logits kept: every draft position and one past the last (spec rows), then the
        # sampled plain decodes; prefill chunks that sample come after those.
        q = rows.q if rows is not None else 1
        offsets: list[int] = []
        keep: list[int] = []
        for b, it in enumerate(spec):
            offsets.append(len(keep))
            keep += [b * q + it.num_tokens - 1 + j for j in range(it.draft + 1)]
        n_spec = len(keep)
        keep += [(len(spec) + i) * q for i, it in enumerate(decodes) if it.sample]
        # Token-level rows: one batched verification.
        token_rows = [b for b, s in enumerate(scored) if not s]
        ks = [it.draft for it in spec]
        vdrafts = [host_drafts[b] if host_drafts is not None else (0,) * ks[b] for b in token_rows]
        vparams = [spec[b].seq.request.sampling for b in token_rows]
        keys: list[int] = []
        counters: list[int] = []
        for b, p in zip(token_rows, vparams, strict=True):
            if not p.greedy:
                key, c = target.streams.take(spec[b].seq.seq_id, p.seed, ks[b] + 1)
                keys += [key] * (ks[b] + 1)
                counters += range(c, c + ks[b] + 1)
        qs = [
            torch.stack(prop.q[b]) if prop is not None and b in prop.q else None for b in token_rows
        ]
        vspec = VerifySpec(
            vdrafts,
            [offsets[b] for b in token_rows],
            vparams,
            qs,
            keys,
            counters,
            device_drafts=prop.drafts[token_rows] if prop is not None and token_rows else None,
        )
        if token_rows:
            vspec.stage(st)
        plain = [it for it in (*decodes, *prefills) if it.sample]
        pspec = target.sample_spec(plain)
        pspec.stage(st)
        scored_rows = [b for b, s in enumerate(scored) if s]
        fspec = target.sample_spec([spec[b] for b in scored_rows])
        fspec.stage(st)
        fpos = st.add([offsets[b] for b in scored_rows]) if scored_rows else None
        nll_pos: list[int] = []
        nll_row: list[int] = []
        nll_col: list[int] = []
        for b in scored_rows:
            for j in range(ks[b]):
                nll_pos.append(offsets[b] + j)
                nll_row.append(b)
                nll_col.append(j)
        nll_seg = st.add(nll_pos + nll_row + nll_col) if nll_pos else None
        if rows is None:
            ids: list[int] | torch.Tensor = []
        elif host_drafts is not None:
            ids = row_tokens(
                [
                    [*it.seq.token_ids[it.start : it.start + it.num_tokens], *host_drafts[b]]
                    if b < len(spec)
                    else it.seq.token_ids[it.start : it.start + it.num_tokens]
                    for b, it in enumerate(items)
                ],
                q,
            )
        else:
            assert prop is not None
            ids = self._device_ids(items, spec, prop, q)
        logits, pre, staged = target.forward(rows, ids, prefills, keep)
        self.verify_forwards += 1
        spec_logits = logits[:n_spec]
        plain_logits = torch.cat([logits[n_spec:], pre])
        parts: list[torch.Tensor] = []
        if token_rows:
            vspec.bind(staged)
            parts.append(verify(spec_logits, vspec))
        if plain:
            pspec.bind(staged)
            parts.append(sample(plain_logits, pspec))
        if scored_rows and fpos is not None:
            fspec.bind(staged)
            parts.append(sample(spec_logits[staged.ints(fpos)], fspec))
        if prop is not None and spec:
            parts.append(prop.drafts.reshape(-1))
        nll: list[float] = []
        if nll_seg is not None and prop is not None:
            ix = staged.ints(nll_seg).view(3, -1)
            sel = spec_logits[ix[0]].float()
            toks = prop.drafts[ix[1], ix[2]]
            values = torch.logsumexp(sel, -1) - sel.gather(-1, toks[:, None])[:, 0]
            parts = [p.double() for p in parts] + [values.double()]
        host = torch.cat(parts).tolist() if parts else []
        if nll_seg is not None:
            nll = host[len(host) - len(nll_pos) :]
            host = [int(x) for x in host[: len(host) - len(nll_pos)]]
        return self._decide(
            spec, plain, scored, token_rows, scored_rows, host_drafts, host, nll, nll_row
        )

    def _device_ids(
        self, items: list[ScheduledSeq], spec: list[ScheduledSeq], prop: _Proposal, q: int
    ) -> torch.Tensor:
        """[B, q] verify ids: pending tokens from the host, then each row's device drafts."""
        pending = [it.seq.token_ids[it.start : it.start + it.num_tokens] for it in items]
        host = row_tokens(pending, q)
        ids = torch.tensor(host, dtype=torch.long).view(len(items), q).to(self.target.device)
        if spec and prop.drafts.shape[1]:
            n = len(spec)
            cols = torch.arange(q, device=ids.device)[None, :]
            pend = torch.tensor([it.num_tokens for it in spec], device=ids.device)[:, None]
            k = torch.tensor([it.draft for it in spec], device=ids.device)[:, None]
            src = (cols - pend).clamp(0, prop.drafts.shape[1] - 1)
            vals = prop.drafts.gather(1, src)
            take = (cols >= pend) & (cols < pend + k)
            ids[:n] = torch.where(take, vals, ids[:n])
        return ids

    def _decide(
        self,
        spec: list[ScheduledSeq],
        plain: list[ScheduledSeq],
        scored: list[bool],
        token_rows: list[int],
        scored_rows: list[int],
        host_drafts: list[tuple[int, ...]] | None,
        host: list[int],
        nll: list[float],
        nll_row: list[int],
    ) -> dict[int, int | Accepted]:
        policy = self.policy
        n_tok, n_plain, n_scored = len(token_rows), len(plain), len(scored_rows)
        verified = host[: 2 * n_tok]
        plain_tokens = host[2 * n_tok : 2 * n_tok + n_plain]
        first = host[2 * n_tok + n_plain : 2 * n_tok + n_plain + n_scored]
        flat_drafts = host[2 * n_tok + n_plain + n_scored :]
        kmax = len(flat_drafts) // len(spec) if spec and host_drafts is None else 0
        where = {b: i for i, b in enumerate(token_rows)}
        first_of = {b: i for i, b in enumerate(scored_rows)}
        nll_of: dict[int, list[float]] = {}
        for b, v in zip(nll_row, nll, strict=True):
            nll_of.setdefault(b, []).append(float(v))
        out: dict[int, int | Accepted] = {}
        for b, it in enumerate(spec):
            k = it.draft
            if host_drafts is not None:
                drafts = tuple(host_drafts[b])
            else:
                drafts = tuple(flat_drafts[b * kmax : b * kmax + k])
            if scored[b]:
                row = RowResult(
                    drafts, nll=tuple(nll_of.get(b, ())), first_token=first[first_of[b]]
                )
            else:
                i = where[b]
                row = RowResult(drafts, accepted=verified[i], next_token=verified[n_tok + i])
            tokens = policy.decide(it.seq, row)
            out[it.seq.seq_id] = Accepted(tokens, self._computed(it, drafts, tokens))
        for it, tok in zip(plain, plain_tokens, strict=True):
            out[it.seq.seq_id] = tok
            policy.observe_plain(it.seq, tok)
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
    lookup: bool = False,
) -> SpeculativeRunner:
    """Runners for a target and its drafter: lookup drafts (`lookup`), a second model, or the
    target's first layers."""
    target = ModelRunner(target_model, config)
    if lookup:
        if spec.step_level:
            raise ValueError("step-level speculation needs a draft model, not lookup drafts")
        return SpeculativeRunner(target, None, LookupPolicy(spec))
    if draft_model is None:
        layers = self_draft_layers or default_self_draft_layers(target_model)
        view = self_draft(target_model, layers)
        draft = ModelRunner(
            view,
            config,
            shared_kv=target.kv[:layers],
            tables=target.tables,
            streams=target.streams,
        )
    else:
        draft = ModelRunner(draft_model, config, tables=target.tables, streams=target.streams)
    policy: SpecPolicy = StepPolicy(spec) if spec.step_level else TokenPolicy(spec)
    return SpeculativeRunner(target, draft, policy)
