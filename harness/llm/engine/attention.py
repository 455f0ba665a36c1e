"""Paged attention, registered in transformers' AttentionInterface under `harness_paged`.

The runner packs every scheduled token of the step into one row ([1, T]): decode rows first
(B rows of `q` query tokens each: q = 1 for plain decodes, more when speculative decoding
verifies drafted tokens), then prefill chunks. Each layer writes its new K/V into the runner's
block tensor, then the decode rows attend over their blocks in one batched SDPA call (query
heads grouped per KV head, no KV repeat) and each prefill chunk attends over its cached prefix
plus itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

ATTN_NAME = "harness_paged"


@dataclass
class PrefillSegment:
    start: int  # offset of the chunk in the packed tokens
    length: int
    context: int  # keys the chunk attends to: cached prefix + the chunk
    block_table: torch.Tensor | None  # blocks holding the context; None: the chunk is all of it
    mask: torch.Tensor | None  # [length, context] bool, None for plain causal


@dataclass
class PagedMetadata:
    k_cache: list[torch.Tensor]  # per layer, [(num_blocks + 1) * block_size, kv_heads, head_dim]
    v_cache: list[torch.Tensor]
    block_size: int
    slot_mapping: torch.Tensor  # [T] slot written by each packed token
    num_decode: int  # packed tokens [0, num_decode) are decode rows, row-major
    decode_block_tables: torch.Tensor | None  # [rows, W]
    # [rows, 1, q * groups, W * block_size] bool (or [rows, 1, 1, ...] when q == 1): row b's
    # query i (all `groups` heads of a KV head) sees the keys below its context length.
    decode_mask: torch.Tensor | None
    prefills: list[PrefillSegment]
    decode_query_len: int = 1  # q: query tokens per decode row


def _gather(cache: torch.Tensor, block_size: int, table: torch.Tensor) -> torch.Tensor:
    """[..., W] block ids -> [..., W * block_size, kv_heads, head_dim] keys or values."""
    blocks = cache.view(-1, block_size, cache.shape[1], cache.shape[2])[table]
    return blocks.flatten(-4, -3)


def paged_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    meta: PagedMetadata | None = kwargs.get("paged_metadata")
    if meta is None:
        raise RuntimeError("harness_paged attention called without paged_metadata")
    layer: int = module.layer_idx  # type: ignore[assignment]
    q = query[0].transpose(0, 1)  # [T, H, D]
    k = key[0].transpose(0, 1)  # [T, Hkv, D]
    v = value[0].transpose(0, 1)
    kc, vc = meta.k_cache[layer], meta.v_cache[layer]
    kc.index_put_((meta.slot_mapping,), k)  # index_put_: inductor re-inplaces it
    vc.index_put_((meta.slot_mapping,), v)
    n_heads, n_kv, dim = q.shape[1], k.shape[1], q.shape[2]
    groups = n_heads // n_kv
    parts: list[torch.Tensor] = []
    if meta.num_decode:
        nq = meta.decode_query_len
        b = meta.num_decode // nq
        if meta.decode_block_tables is None:
            raise RuntimeError("decode tokens without block tables")
        kd = _gather(kc, meta.block_size, meta.decode_block_tables).transpose(1, 2)
        vd = _gather(vc, meta.block_size, meta.decode_block_tables).transpose(1, 2)
        # The query heads of one KV head (times the row's q tokens) act as rows of one matrix.
        qd = q[: b * nq].reshape(b, nq, n_kv, groups, dim).transpose(1, 2)
        qd = qd.reshape(b, n_kv, nq * groups, dim)
        od = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=meta.decode_mask, scale=scaling)
        od = od.reshape(b, n_kv, nq, groups, dim).transpose(1, 2)
        parts.append(od.reshape(b * nq, n_heads, dim))
    for seg in meta.prefills:
        end = seg.start + seg.length
        qs = q[seg.start : end].transpose(0, 1)
        if seg.block_table is None:
            ks, vs = k[seg.start : end], v[seg.start : end]
        else:
            ks = _gather(kc, meta.block_size, seg.block_table)[: seg.context]
            vs = _gather(vc, meta.block_size, seg.block_table)[: seg.context]
        ks, vs = ks.transpose(0, 1), vs.transpose(0, 1)
        if groups > 1:
            ks = ks.repeat_interleave(groups, dim=0)
            vs = vs.repeat_interleave(groups, dim=0)
        os_ = F.scaled_dot_product_attention(
            qs[None],
            ks[None],
            vs[None],
            attn_mask=None if seg.mask is None else seg.mask[None, None],
            is_causal=seg.mask is None and seg.length > 1,
            scale=scaling,
        )
        parts.append(os_[0].transpose(0, 1))
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    return out.unsqueeze(0), None


def register() -> str:
    """Register the paged attention function with transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, paged_attention)
    return ATTN_NAME
