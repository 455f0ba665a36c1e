"""Decode rows: B sequences with up to q new tokens each, packed for one paged forward pass.

Plain decodes are rows of one token; speculative decoding feeds a row's pending tokens plus
its drafted ones (verification) or one drafted token per draft step. Tokens past a row's
length are padding: they write to the scratch block and their logits are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from harness.llm.engine.attention import PagedMetadata
from harness.llm.engine.plan import ScheduledSeq
from harness.llm.engine.sequence import Sequence


@dataclass(frozen=True)
class Rows:
    """Host-side description of a row batch; token ids come separately (host or device)."""

    seqs: tuple[Sequence, ...]  # the sequence of each row (its block table)
    starts: tuple[int, ...]  # position of each row's first token
    lengths: tuple[int, ...]  # real tokens per row, 0..q
    q: int  # tokens per row, padding included

    @classmethod
    def of(cls, items: Seq[ScheduledSeq], extra: Seq[int] = ()) -> Rows | None:
        """Rows for scheduled items: each feeds its chunk (plus `extra[i]` more tokens)."""
        if not items:
            return None
        lengths = [it.num_tokens + (extra[i] if extra else 0) for i, it in enumerate(items)]
        return cls(
            seqs=tuple(it.seq for it in items),
            starts=tuple(it.start for it in items),
            lengths=tuple(lengths),
            q=max(lengths),
        )

    @property
    def batch(self) -> int:
        return len(self.starts)

    @property
    def width(self) -> int:
        """Blocks the widest row's table holds."""
        return max(len(s.block_table) for s in self.seqs)

    def last_index(self) -> list[int]:
        """Flat index of each row's last real token (the one whose logits a draft step samples)."""
        return [b * self.q + n - 1 for b, n in enumerate(self.lengths)]


def pack_rows(
    rows: Rows, block_size: int, null_block: int, batch: int
) -> tuple[list[int], list[int], list[int]]:
    """(positions, slots, context lengths) of every row token, padded to `batch` rows.

    Padding tokens (and padding rows) write to the scratch block and see one key, so they
    never touch a real block and never produce NaNs.
    """
    q = rows.q
    null_slot = null_block * block_size
    pos: list[int] = []
    slots: list[int] = []
    ctx: list[int] = []
    for seq, start, n in zip(rows.seqs, rows.starts, rows.lengths, strict=True):
        table = seq.block_table
        if q == 1 and n == 1:  # the common case: a plain decode
            pos.append(start)
            slots.append(table[start // block_size] * block_size + start % block_size)
            ctx.append(start + 1)
            continue
        for j in range(q):
            p = start + j
            pos.append(p)
            if j < n:
                slots.append(table[p // block_size] * block_size + p % block_size)
                ctx.append(p + 1)
            else:
                slots.append(null_slot)
                ctx.append(1)
    pad = batch - rows.batch
    pos += [0] * (pad * q)
    slots += [null_slot] * (pad * q)
    ctx += [1] * (pad * q)
    return pos, slots, ctx


def split_flat(flat: torch.Tensor, batch: int, width: int, q: int) -> tuple[torch.Tensor, ...]:
    """Views (ids [1, B*q], positions [1, B*q], slots [B*q], tables [B, W], ctx [B*q]) of one
    buffer, so a step's inputs reach the device in a single copy."""
    t = batch * q
    return (
        flat[:t].view(1, t),
        flat[t : 2 * t].view(1, t),
        flat[2 * t : 3 * t],
        flat[4 * t :].view(batch, width),
        flat[3 * t : 4 * t],
    )


def rows_mask(
    ctx: torch.Tensor,
    batch: int,
    q: int,
    keys: int,
    groups: int,
    span: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, 1, q * groups, keys] (or [B, 1, 1, keys] for q == 1) from per-token context lengths
    (`span`: a reusable `arange(keys)` or longer)."""
    span = torch.arange(keys, device=ctx.device) if span is None else span[:keys]
    mask = span[None] < ctx[:, None]  # [B * q, keys]
    if q == 1:
        return mask.view(batch, 1, 1, keys)
    return mask.view(batch, q, keys).repeat_interleave(groups, dim=1).unsqueeze(1)


def decode_forward(
    model: torch.nn.Module,
    k_cache: list[torch.Tensor],
    v_cache: list[torch.Tensor],
    block_size: int,
    groups: int,
    ids: torch.Tensor,
    pos: torch.Tensor,
    slots: torch.Tensor,
    tables: torch.Tensor,
    ctx: torch.Tensor,
) -> torch.Tensor:
    """A padded row step (logits of every token). A free function, so one compiled version
    serves every runner of a model (the caches are inputs, not guarded attributes)."""
    batch, width = tables.shape
    q = ids.shape[1] // batch
    mask = rows_mask(ctx, batch, q, width * block_size, groups)
    meta = PagedMetadata(
        k_cache, v_cache, block_size, slots, batch * q, tables, mask, [], decode_query_len=q
    )
    out = model(
        input_ids=ids, position_ids=pos, use_cache=False, logits_to_keep=0, paged_metadata=meta
    )
    logits: torch.Tensor = out.logits
    return logits


def bucket(n: int, cap: int) -> int:
    """Graph batch bucket: the next power of two, capped."""
    b = 1
    while b < n:
        b *= 2
    return min(b, cap) if n <= cap else n


def width_bucket(w: int) -> int:
    """Graph block-table width: rounded up at ~25% granularity (few graphs, little padding)."""
    if w <= 8:
        return bucket(w, 8)
    step = 1 << (w.bit_length() - 3)
    return -(-w // step) * step


def row_tokens(ids: Seq[Seq[int]], q: int) -> list[int]:
    """Host ids of a row batch, each row right-padded with 0 to q tokens."""
    out: list[int] = []
    for row in ids:
        out += list(row) + [0] * (q - len(row))
    return out
