"""Token sampling on the device, one batched call per step: greedy, temperature, top-p, per-request
seeds; and exact speculative verification (Leviathan et al. 2023, Chen et al. 2023) of drafts
from a model (distribution q) or from a lookup (a point mass: q one-hot at the draft).

Random numbers come from a counter-based generator: uniform `c` of stream `key` is a 32-bit
integer hash of (key, c), computed on the device for the whole batch at once. A seeded request
is its own stream (key from its seed, counter = draws it made so far), so its samples do not
depend on what it is batched with; unseeded requests share one stream keyed at random per
engine. A draw from a distribution is the inverse CDF at a uniform: no full sort unless top-p
cuts the vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Sequence as Seq

import torch

from harness.llm.engine.sequence import SamplingParams
from harness.llm.engine.tables import Staged, Staging

M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B  # < 2**27: products of 32-bit values stay inside int64


def mix32(x: int) -> int:
    """The generator's 32-bit integer hash (host version of `_mix`)."""
    x &= M32
    x = (((x >> 16) ^ x) * _MUL) & M32
    x = (((x >> 16) ^ x) * _MUL) & M32
    return (x >> 16) ^ x


def stream_key(seed: int) -> int:
    """The stream of a request seed (any Python int)."""
    return mix32(mix32(seed & M32) ^ (seed >> 32) ^ 0x9E3779B9)


def random_key() -> int:
    return int.from_bytes(os.urandom(4), "little")


def _mix(x: torch.Tensor) -> torch.Tensor:
    x = (((x >> 16) ^ x) * _MUL) & M32
    x = (((x >> 16) ^ x) * _MUL) & M32
    return (x >> 16) ^ x


def uniforms(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """float32 uniforms in [0, 1) (24 bits) for int64 stream keys and counters (< 2**32)."""
    h = _mix(keys ^ _mix(counters & M32))
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


HOST_UNIFORMS = 256  # up to this many per step the host computes them (fewer device ops)


def host_uniform(key: int, counter: int) -> float:
    """`uniforms` of one (key, counter), on the host: the same value, bit for bit."""
    return (mix32(key ^ mix32(counter)) >> 8) * (1.0 / (1 << 24))


def stage_uniforms(staging: Staging, keys: Seq[int], counters: Seq[int]) -> tuple[int, bool]:
    """Queue the uniforms of (key, counter) pairs: computed here when few, else as the pairs
    for the device to hash. Returns (segment, on host)."""
    if len(keys) <= HOST_UNIFORMS:
        return staging.add_floats(
            [host_uniform(k, c) for k, c in zip(keys, counters, strict=True)]
        ), True
    return staging.add([*keys, *counters]), False


def bound_uniforms(staged: Staged, seg: tuple[int, bool]) -> torch.Tensor:
    i, on_host = seg
    if on_host:
        return staged.floats(i)
    pairs = staged.ints(i)
    n = pairs.shape[0] // 2
    return uniforms(pairs[:n], pairs[n:])


class Streams:
    """Per-request random streams: (key, next counter) bookkeeping on the host."""

    def __init__(self, key: int | None = None) -> None:
        self.key = random_key() if key is None else key & M32
        self._shared = 0
        self._seeded: dict[int, tuple[int, int]] = {}  # seq id -> (key, next counter)

    def take(self, seq_id: int, seed: int | None, n: int) -> tuple[int, int]:
        """(key, first counter) of `n` fresh uniforms for a request."""
        if seed is None:
            c = self._shared
            self._shared = (c + n) & M32
            return self.key, c
        key, c = self._seeded.get(seq_id) or (stream_key(seed), 0)
        self._seeded[seq_id] = (key, c + n)
        return key, c

    def release(self, seq_id: int) -> None:
        self._seeded.pop(seq_id, None)


def expand(keys: Seq[int], firsts: Seq[int], counts: Seq[int]) -> tuple[list[int], list[int]]:
    """Flat (key, counter) lists: `counts[i]` consecutive counters of stream i."""
    ks: list[int] = []
    cs: list[int] = []
    for key, c, n in zip(keys, firsts, counts, strict=True):
        ks += [key] * n
        cs += range(c, c + n)
    return ks, cs


# -- distributions ------------------------------------------------------------------------------
def _nucleus(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Rows of `probs` cut to their top-p nucleus (`top_p` [N, 1]), renormalised."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    cum = sorted_p.cumsum(-1)
    sorted_p = sorted_p.masked_fill(cum - sorted_p > top_p, 0.0)
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return kept / kept.sum(-1, keepdim=True)


def processed_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution `sample` draws from, for every row of `logits` ([..., vocab]):
    softmax at the temperature, cut to the top-p nucleus and renormalised; one-hot at the
    argmax for greedy params."""
    logits = logits.float()
    if params.greedy:
        out = torch.zeros_like(logits)
        return out.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p >= 1.0:
        return probs
    flat = probs.reshape(-1, probs.shape[-1])
    top = torch.full((flat.shape[0], 1), params.top_p, device=probs.device)
    return _nucleus(flat, top).view_as(probs)


def _probs(
    logits: torch.Tensor,
    temps: torch.Tensor,
    cut: list[int],
    cut_t: torch.Tensor | None,
    tops_t: torch.Tensor | None,
) -> torch.Tensor:
    """`processed_probs` of every row with its own temperature (`temps` [N], > 0) and, for the
    rows `cut` (device `cut_t`), its top-p (`tops_t`)."""
    probs = torch.softmax(logits.float() / temps[:, None], dim=-1)
    if cut and cut_t is not None and tops_t is not None:
        probs[cut_t] = _nucleus(probs[cut_t], tops_t[:, None])
    return probs


def inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One index per row of `weights` ([N, V], >= 0, rows need not sum to 1) at uniforms `u`:
    the first index whose cumulative weight reaches (1 - u) * total (> 0, so zero-weight
    entries are never chosen)."""
    cdf = weights.cumsum(-1)  # float32: each entry's weight is off by ~1e-7 at most
    x = (1.0 - u) * cdf[:, -1]
    idx = torch.searchsorted(cdf, x[:, None])[:, 0]
    return idx.clamp_max(weights.shape[-1] - 1)


class SampleSpec:
    """How the rows of a logits batch sample: built on the host, staged with the step's inputs
    (`stage`), then read on the device (`bind`). Sampled row i draws at uniform
    (`keys[i]`, `counters[i]`)."""

    def __init__(
        self, params: Seq[SamplingParams], keys: Seq[int] = (), counters: Seq[int] = ()
    ) -> None:
        self.params = tuple(params)
        self.sampled = [i for i, p in enumerate(self.params) if not p.greedy]
        self.cut = [j for j, i in enumerate(self.sampled) if self.params[i].top_p < 1.0]
        if len(keys) != len(self.sampled) or len(counters) != len(self.sampled):
            raise ValueError("one (key, counter) per sampled row")
        self._keys, self._counters = keys, counters
        self._segs: tuple[int, int, tuple[int, bool]] | None = None
        self.rows_t: torch.Tensor | None = None
        self.cut_t: torch.Tensor | None = None
        self.temps_t: torch.Tensor | None = None
        self.tops_t: torch.Tensor | None = None
        self.u: torch.Tensor | None = None

    def stage(self, staging: Staging) -> None:
        if not self.sampled:
            return
        p = self.params
        ints = staging.add([*self.sampled, *self.cut])
        floats = staging.add_floats(
            [
                *(p[i].temperature for i in self.sampled),
                *(p[self.sampled[j]].top_p for j in self.cut),
            ]
        )
        self._segs = (ints, floats, stage_uniforms(staging, self._keys, self._counters))

    def bind(self, staged: Staged) -> None:
        if self._segs is None:
            return
        s = len(self.sampled)
        ints, floats = staged.ints(self._segs[0]), staged.floats(self._segs[1])
        self.rows_t, self.cut_t = ints[:s], ints[s:]
        self.temps_t, self.tops_t = floats[:s], floats[s:]
        self.u = bound_uniforms(staged, self._segs[2])


def sample(logits: torch.Tensor, spec: SampleSpec) -> torch.Tensor:
    """One token per row of `logits` ([N, vocab]) on the device: argmax (float32) for greedy
    rows, else an inverse-CDF draw from the processed distribution (no sort at top_p = 1)."""
    return sample_with_probs(logits, spec)[0]


def sample_with_probs(
    logits: torch.Tensor, spec: SampleSpec
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`sample`, and the distributions of the sampled rows (`[len(spec.sampled), vocab]`)."""
    tokens = logits.argmax(dim=-1)
    if not spec.sampled:
        return tokens, None
    if spec.rows_t is None or spec.temps_t is None or spec.u is None:
        raise ValueError("bind() the staged sampling spec first")
    everything = len(spec.sampled) == len(spec.params)
    sel = logits if everything else logits[spec.rows_t]
    probs = _probs(sel, spec.temps_t, spec.cut, spec.cut_t, spec.tops_t)
    drawn = inverse_cdf(probs, spec.u)
    return (drawn if everything else tokens.index_copy(0, spec.rows_t, drawn)), probs


def sample_host(
    logits: torch.Tensor, params: Seq[SamplingParams], streams: Streams, seq_ids: Seq[int]
) -> torch.Tensor:
    """`sample` for callers without a staged step (one small host-to-device copy)."""
    keys: list[int] = []
    counters: list[int] = []
    for p, sid in zip(params, seq_ids, strict=True):
        if not p.greedy:
            key, c = streams.take(sid, p.seed, 1)
            keys.append(key)
            counters.append(c)
    spec = SampleSpec(params, keys, counters)
    staging = Staging(logits.device)
    spec.stage(staging)
    spec.bind(staging.send())
    return sample(logits, spec)


# -- speculative verification -------------------------------------------------------------------
class VerifySpec:
    """Speculative rows to verify, built on the host and staged like `SampleSpec`.

    Row r's logits are rows `offsets[r] .. offsets[r] + k_r` of the verify logits (one per
    draft, then one past the last). Its drafts are `drafts[r]` (host), or the first k_r of row
    r of `device_drafts` (a draft model's, still on the device; `drafts[r]` then only gives
    k_r). `q[r]` is the draft model's distribution at each draft (`[k_r, vocab]`), or None for
    a point mass (a lookup draft). A sampled row uses k_r + 1 uniforms: one per draft
    (acceptance), then one for its final draw; `keys` / `counters` hold them flat, in row order.
    """

    def __init__(
        self,
        drafts: Seq[Seq[int]],
        offsets: Seq[int],
        params: Seq[SamplingParams],
        q: Seq[torch.Tensor | None],
        keys: Seq[int] = (),
        counters: Seq[int] = (),
        device_drafts: torch.Tensor | None = None,
    ) -> None:
        self.params = tuple(params)
        self.q = list(q)
        self.ks = [len(d) for d in drafts]
        self.width = w = max(self.ks, default=0) + 1
        self.sampled = [r for r, p in enumerate(self.params) if not p.greedy]
        self.cut = [j for j, r in enumerate(self.sampled) if self.params[r].top_p < 1.0]
        if len(keys) != sum(self.ks[r] + 1 for r in self.sampled) or len(counters) != len(keys):
            raise ValueError("k + 1 uniforms per sampled row")
        pos: list[int] = []
        flat: list[int] = []
        for o, d in zip(offsets, drafts, strict=True):
            k = len(d)
            pos += [o + min(j, k) for j in range(w)]
            flat += [*d, *([-1] * (w - k))]
        acc: list[int] = []  # uniform of (sampled row, position): acceptance at j < k_r
        fin: list[int] = []  # ... and the final draw
        at = 0
        for r in self.sampled:
            k = self.ks[r]
            acc += [at + min(j, k) for j in range(w)]
            fin.append(at + k)
            at += k + 1
        self._ints = [*pos, *flat, *self.ks, *self.sampled, *self.cut, *acc, *fin]
        r_, s, c = len(self.ks), len(self.sampled), len(self.cut)
        self._sizes = (r_ * w, r_ * w, r_, s, c, s * w, s)
        self._floats = [
            *(self.params[r].temperature for r in self.sampled),
            *(self.params[self.sampled[j]].top_p for j in self.cut),
        ]
        self._keys, self._counters = keys, counters
        self.device_drafts = device_drafts
        self._segs: tuple[int, int, tuple[int, bool]] | None = None
        self._staged: Staged | None = None

    def stage(self, staging: Staging) -> None:
        self._segs = (
            staging.add(self._ints),
            staging.add_floats(self._floats),
            stage_uniforms(staging, self._keys, self._counters),
        )

    def bind(self, staged: Staged) -> None:
        self._staged = staged

    def views(self) -> list[torch.Tensor]:
        """pos, drafts, ks, sampled, cut, acc, fin, temps, tops, uniforms (device)."""
        if self._staged is None or self._segs is None:
            raise ValueError("bind() the staged verification spec first")
        ints = self._staged.ints(self._segs[0])
        out: list[torch.Tensor] = []
        at = 0
        for n in self._sizes:
            out.append(ints[at : at + n])
            at += n
        floats = self._staged.floats(self._segs[1])
        s = len(self.sampled)
        out += [floats[:s], floats[s:], bound_uniforms(self._staged, self._segs[2])]
        return out


def point_residual(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """max(0, p - q) for q one-hot at `x` ([N, 1]): p without x (renormalised by the draw)."""
    return p.scatter(1, x, 0.0)


def verify(logits: torch.Tensor, spec: VerifySpec) -> torch.Tensor:
    """[2R] int64 on the device: drafts accepted by each row, then each row's next token.

    Greedy rows accept the longest prefix equal to the target's argmax and add the argmax
    after it. Sampled rows accept draft i with probability min(1, p_i(x) / q_i(x)) while all
    before it were; at the first rejection the next token is drawn from max(0, p_i - q_i)
    renormalised (for a point mass q: p_i without x), after k acceptances from p_k (the bonus).
    """
    dev = logits.device
    n_rows, w = len(spec.ks), spec.width
    pos_f, drafts_f, ks_t, rows_t, cut_t, acc_i, fin_i, temps_t, tops_t, u = spec.views()
    pos_t = pos_f.view(n_rows, w)
    drafts_t = drafts_f.view(n_rows, w)
    if spec.device_drafts is not None and w > 1:  # a draft model's tokens, still on the device
        dd = spec.device_drafts[:, : w - 1]
        cols = torch.arange(w - 1, device=dev)[None, :]
        drafts_t = drafts_t.clone()
        drafts_t[:, : w - 1] = torch.where(cols < ks_t[:, None], dd, -1)
    everything = len(spec.sampled) == n_rows
    if everything:  # the usual agent batch: every row samples (no index shuffles)
        match = torch.zeros_like(drafts_t, dtype=torch.bool)
        nxt = drafts_t
    else:
        argmax = logits.argmax(-1)[pos_t]  # [R, w]
        match = argmax == drafts_t
        nxt = argmax
    if spec.sampled:
        s = len(spec.sampled)
        spos = pos_t if everything else pos_t[rows_t]
        probs = _probs(
            logits[spos.reshape(-1)],
            temps_t.repeat_interleave(w),
            [j * w + c for j in spec.cut for c in range(w)],
            (cut_t[:, None] * w + torch.arange(w, device=dev)).reshape(-1),
            tops_t.repeat_interleave(w),
        ).view(s, w, -1)
        d = drafts_t if everything else drafts_t[rows_t]
        dc = d.clamp_min(0)
        p_d = probs.gather(2, dc[:, :, None])[:, :, 0]
        qs: list[tuple[int, torch.Tensor, int]] = []
        for i, r in enumerate(spec.sampled):
            q_r = spec.q[r]
            if q_r is not None and spec.ks[r]:
                qs.append((i, q_r, spec.ks[r]))
        u_acc = u[acc_i.view(s, w)]
        if qs:  # a model draft: q at each of its drafts (a point mass: q(x) = 1)
            q_d = torch.ones_like(p_d)
            for i, q, k in qs:
                q_d[i, :k] = q.gather(1, dc[i, :k, None])[:, 0]
            u_acc = u_acc * q_d
        accept = (u_acc < p_d) & (d >= 0)  # accept iff u < p / q
        m = accept.long().cumprod(1).sum(1)
        p_sel = probs[torch.arange(s, device=dev), m]  # [S, V]
        residual = point_residual(p_sel, dc.gather(1, m[:, None]))
        for i, q, k in qs:  # no host sync: the rejected position is indexed on the device
            at = m[i : i + 1].clamp_max(k - 1)
            residual[i] = (p_sel[i] - q.index_select(0, at)[0]).clamp_min(0.0)
        ks_s = ks_t if everything else ks_t[rows_t]
        weights = torch.where((m < ks_s)[:, None], residual, p_sel)
        empty = weights.sum(-1) <= 0.0  # p == q up to rounding: a rejection had ~0 probability
        weights = torch.where(empty[:, None], p_sel, weights)
        drawn = inverse_cdf(weights, u[fin_i])
        if everything:
            return torch.cat([m, drawn])
        match = match.index_copy(0, rows_t, accept)
        nxt = nxt.index_copy(0, rows_t, drawn[:, None].expand(-1, w).contiguous())
    accepted = match.long().cumprod(1).sum(1)  # a padding slot (-1) never matches
    next_token = nxt.gather(1, accepted[:, None])[:, 0]
    return torch.cat([accepted, next_token])
