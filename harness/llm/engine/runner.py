"""The model runner: owns the KV tensors, packs a scheduled step, runs the model, samples.

All tensors of the engine live here. One forward pass serves every scheduled sequence (decode
rows and prefill chunks packed into one row); on CUDA, pure row steps (plain decodes, draft
steps, speculative verification) replay CUDA graphs bucketed by batch size, block-table width
and tokens per row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from harness.llm.engine import attention
from harness.llm.engine.attention import PagedMetadata, PrefillSegment
from harness.llm.engine.config import EngineConfig
from harness.llm.engine.kv import CopyOp
from harness.llm.engine.plan import Accepted, ScheduledSeq, SchedulerOutput
from harness.llm.engine.rows import (
    Rows,
    bucket,
    decode_forward,
    pack_rows,
    rows_mask,
    split_flat,
    width_bucket,
)
from harness.llm.engine.sampling import SampleSpec, Streams, sample
from harness.llm.engine.tables import BlockTables, Staged, Staging


class Runner(Protocol):
    """What the engine loop needs from a runner: one result per scheduled item (a sampled
    token, the tokens a speculative row accepted, or None for a chunk that does not sample)."""

    @property
    def warmup_s(self) -> float:  # one-time costs inside execute() so far (graph capture...)
        ...

    def execute(self, out: SchedulerOutput) -> Seq[int | Accepted | None]: ...

    def release(self, seq_id: int) -> None: ...


@dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: torch.Tensor  # flat: ids, positions, slots, context lengths, block tables
    logits: torch.Tensor


def kv_dims(model: torch.nn.Module) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a transformers causal LM."""
    cfg = _text_config(model)
    heads = int(cfg.num_attention_heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    return int(cfg.num_hidden_layers), kv_heads, head_dim


def _text_config(model: torch.nn.Module) -> Any:
    cfg: Any = model.config
    get_text = getattr(cfg, "get_text_config", None)
    return get_text() if callable(get_text) else cfg


def kv_bytes_per_block(model: torch.nn.Module, block_size: int, layers: int | None = None) -> int:
    """Device bytes one KV block takes for this model (to size `num_blocks` from free memory)."""
    n_layers, kv_heads, head_dim = kv_dims(model)
    itemsize = next(model.parameters()).element_size()
    return (layers or n_layers) * 2 * block_size * kv_heads * head_dim * itemsize


_COMPILED: list[Callable[..., torch.Tensor]] = []
DEVICE_PACK = 64  # row tokens above which positions and slots are computed on the device


def _compiled_decode() -> Callable[..., torch.Tensor]:
    """`torch.compile(decode_forward)`, made on first use: it fuses the ~40 small kernels per
    decoder layer (norms, RoPE, residuals) that dominate a batch-1 decode step."""
    if not _COMPILED:
        _COMPILED.append(torch.compile(decode_forward, dynamic=True))
    return _COMPILED[0]


class ModelRunner:
    """Runs a transformers causal LM over a paged KV cache it allocates.

    `shared_kv` (a `[layers, 2, num_blocks + 1, block_size, kv_heads, head_dim]` view of
    another runner's cache) makes this runner read and write that cache instead: the
    self-draft (the target's first layers) keeps its KV in the target's own blocks. A draft
    runner also shares the target's device block tables (`tables`) and random streams.

    A step's host work is small and fixed: its inputs (ids, positions, slots, context
    lengths, block-table rows and changed table entries, sampling parameters) go to the
    device in one staged copy, sampling runs batched on the device, and one device-to-host
    read returns the sampled tokens.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: EngineConfig,
        *,
        shared_kv: torch.Tensor | None = None,
        tables: BlockTables | None = None,
        streams: Streams | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = config
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        layers, kv_heads, head_dim = kv_dims(model)
        self.groups = int(_text_config(model).num_attention_heads) // kv_heads
        model.set_attn_implementation(attention.register())  # type: ignore[operator]
        nb, bs = config.num_blocks, config.block_size
        self.block_size = bs
        self.null_block = nb  # scratch block that padded slots write to
        self.owns_kv = shared_kv is None
        if shared_kv is None:
            shared_kv = torch.zeros(
                layers, 2, nb + 1, bs, kv_heads, head_dim, dtype=self.dtype, device=self.device
            )
        self.kv = shared_kv
        layers = self.kv.shape[0]
        self.k_cache = [self.kv[i, 0].view(-1, kv_heads, head_dim) for i in range(layers)]
        self.v_cache = [self.kv[i, 1].view(-1, kv_heads, head_dim) for i in range(layers)]
        self.cpu_kv: torch.Tensor | None = None
        if config.offload and self.owns_kv:
            self.cpu_kv = torch.zeros(
                config.num_cpu_blocks,
                layers,
                2,
                bs,
                kv_heads,
                head_dim,
                dtype=self.dtype,
                pin_memory=self.device.type == "cuda",
            )
        width = width_bucket(-(-min(config.max_model_len, nb * bs) // bs) + 1)
        self.tables = tables or BlockTables(width, nb, self.device, rows=config.max_num_seqs)
        self.streams = streams or Streams()
        self.staging = Staging(self.device)
        self._span = torch.arange(width * bs, device=self.device)  # key positions, for masks
        self.use_graphs = config.cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[tuple[int, int, int], _Graph] = {}
        self._graph_pool: Any = None
        self._decode_fn: Callable[..., torch.Tensor] = self.decode_step
        self.graph_replays = 0
        self.static_steps = 0
        self.warmup_s = 0.0
        self.graph_error: str | None = None  # why graphs were turned off, if they were
        self.forwards = 0

    # -- public -----------------------------------------------------------------------------
    def execute(self, out: SchedulerOutput) -> list[int | None]:
        self.copy_blocks(out.copy_ops)
        if not out.items:
            return []
        decodes = [it for it in out.items if it.num_tokens == 1]
        prefills = [it for it in out.items if it.num_tokens > 1]
        ids = [it.seq.token_ids[it.start] for it in decodes]
        keep = [i for i, it in enumerate(decodes) if it.sample]
        sampled_items = [decodes[i] for i in keep] + [it for it in prefills if it.sample]
        spec = self.sample_spec(sampled_items)
        spec.stage(self.staging)
        with torch.inference_mode():
            row_logits, pre_logits, staged = self.forward(Rows.of(decodes), ids, prefills, keep)
            spec.bind(staged)
            logits = torch.cat([row_logits, pre_logits]) if len(pre_logits) else row_logits
            tokens = sample(logits, spec).tolist() if sampled_items else []
        by_seq = {it.seq.seq_id: t for it, t in zip(sampled_items, tokens, strict=True)}
        return [by_seq.get(it.seq.seq_id) if it.sample else None for it in out.items]

    def sample_spec(self, items: Seq[ScheduledSeq]) -> SampleSpec:
        """How `items` sample (their request params; one uniform per sampled row)."""
        params = [it.seq.request.sampling for it in items]
        keys: list[int] = []
        counters: list[int] = []
        for it, p in zip(items, params, strict=True):
            if not p.greedy:
                key, c = self.streams.take(it.seq.seq_id, p.seed, 1)
                keys.append(key)
                counters.append(c)
        return SampleSpec(params, keys, counters)

    def release(self, seq_id: int) -> None:
        self.streams.release(seq_id)
        self.tables.release(seq_id)

    def forward(
        self,
        rows: Rows | None,
        ids: Seq[int] | torch.Tensor,
        prefills: Seq[ScheduledSeq],
        row_keep: Seq[int],
    ) -> tuple[torch.Tensor, torch.Tensor, Staged]:
        """One forward pass: decode rows (`ids` flat on the host, or `[B, q]` on the device),
        then prefill chunks. Returns the logits of the row tokens at the flat indices
        `row_keep`, and of the last token of every prefill chunk that samples, and the step's
        staged inputs (with whatever the caller queued on `self.staging` before)."""
        cfg = self.config
        static = self.use_graphs or cfg.compile_decode or cfg.static_decode
        if rows is not None and not prefills and static and rows.batch <= cfg.graph_max_batch:
            keep_seg = self.staging.add(list(row_keep))
            logits, staged = self._rows_static(rows, ids)
            return logits[staged.ints(keep_seg)], logits[:0], staged
        return self._forward(rows, ids, prefills, row_keep)

    # -- packing ----------------------------------------------------------------------------
    def _forward(
        self,
        rows: Rows | None,
        ids_in: Seq[int] | torch.Tensor,
        prefills: Seq[ScheduledSeq],
        row_keep: Seq[int],
    ) -> tuple[torch.Tensor, torch.Tensor, Staged]:
        bs, dev, st = self.block_size, self.device, self.staging
        host_ids: list[int] = []
        device_ids: torch.Tensor | None = None
        pos: list[int] = []
        slots: list[int] = []
        ctx: list[int] = []
        table_rows: list[int] = []
        keep = list(row_keep)
        n_rows = width = 0
        on_device = False  # row positions/slots/contexts computed on the device
        if rows is not None:
            width = rows.width
            on_device = rows.batch * rows.q > DEVICE_PACK
            if on_device:  # many row tokens: a few device ops beat a Python loop over them
                ctx = [*rows.starts, *rows.lengths]
            else:
                pos, slots, ctx = pack_rows(rows, bs, self.null_block, rows.batch)
            table_rows = [self.tables.row(s) for s in rows.seqs]
            n_rows = rows.batch * rows.q
            if isinstance(ids_in, torch.Tensor):
                device_ids = ids_in.reshape(-1)
            else:
                host_ids += ids_in
        pre: list[tuple[int, int, int, int]] = []  # (offset, length, context, table row)
        n_pre_keep = 0
        for it in prefills:
            s, start, n = it.seq, it.start, it.num_tokens
            offset = n_rows + len(host_ids) - (0 if device_ids is not None else n_rows)
            host_ids += s.token_ids[start : start + n]
            table = s.block_table
            for p in range(start, start + n):
                pos.append(p)
                slots.append(table[p // bs] * bs + p % bs)
            if it.sample:
                keep.append(offset + n - 1)
                n_pre_keep += 1
            pre.append((offset, n, start + n, self.tables.row(s) if start else -1))
        total = n_rows + sum(n for _, n, _, _ in pre)
        segs = [st.add(x) for x in (host_ids, pos, slots, ctx, table_rows, keep or [total - 1])]
        updates = self.tables.stage(st)
        staged = st.send()
        self.tables.apply(staged, updates)
        ids_t, pos_t, slots_t, ctx_t, rows_t, keep_t = (staged.ints(i) for i in segs)
        tables = mask_d = None
        if rows is not None:
            tables = self.tables.gather(rows_t, width)
            if on_device:
                row_pos, row_slots, ctx_t = self._pack_on_device(rows, ctx_t, tables)
                pos_t = torch.cat([row_pos, pos_t])
                slots_t = torch.cat([row_slots, slots_t])
            mask_d = rows_mask(ctx_t, rows.batch, rows.q, width * bs, self.groups, self._span)
        segments: list[PrefillSegment] = []
        for offset, n, context, row in pre:
            if row < 0:
                segments.append(PrefillSegment(offset, n, n, None, None))
                continue
            used = self.tables.tensor[row, : (context + bs - 1) // bs]
            # Built on the device: a long chunk's mask is n x context booleans.
            qpos = torch.arange(context - n, context, device=dev)
            mask = torch.arange(context, device=dev)[None, :] <= qpos[:, None]
            segments.append(PrefillSegment(offset, n, context, used, mask))
        meta = PagedMetadata(
            self.k_cache,
            self.v_cache,
            bs,
            slots_t,
            n_rows,
            tables,
            mask_d,
            segments,
            decode_query_len=rows.q if rows is not None else 1,
        )
        input_ids = ids_t if device_ids is None else torch.cat([device_ids, ids_t])
        self.forwards += 1
        out = self.model(
            input_ids=input_ids[None],
            position_ids=pos_t[None],
            use_cache=False,
            logits_to_keep=keep_t,
            paged_metadata=meta,
        )
        logits: torch.Tensor = out.logits[0, : len(keep)]
        n_row_keep = len(keep) - n_pre_keep
        return logits[:n_row_keep], logits[n_row_keep:], staged

    def _pack_on_device(
        self, rows: Rows, meta: torch.Tensor, tables: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`pack_rows` on the device from each row's start and length (`meta`)."""
        b, q, bs = rows.batch, rows.q, self.block_size
        j = self._span[:q]
        pos = meta[:b, None] + j  # [B, q]
        valid = j < meta[b:, None]
        blocks = tables.gather(1, (pos // bs).clamp_max(tables.shape[1] - 1))
        slots = torch.where(valid, blocks * bs + pos % bs, self.null_block * bs)
        ctx = torch.where(valid, pos + 1, 1)
        return pos.reshape(-1), slots.reshape(-1), ctx.reshape(-1)

    # -- row steps with static shapes: CUDA graphs, optional torch.compile -------------------
    def decode_step(
        self,
        ids: torch.Tensor,
        pos: torch.Tensor,
        slots: torch.Tensor,
        tables: torch.Tensor,
        ctx: torch.Tensor,
    ) -> torch.Tensor:
        """One row step over padded inputs: what graphs capture and compile sees."""
        fn = _compiled_decode() if self.config.compile_decode else decode_forward
        return fn(
            self.model,
            self.k_cache,
            self.v_cache,
            self.block_size,
            self.groups,
            ids,
            pos,
            slots,
            tables,
            ctx,
        )

    def _rows_static(self, rows: Rows, ids: Seq[int] | torch.Tensor) -> tuple[torch.Tensor, Staged]:
        """Logits of every row token `[B * q, V]` from a step padded to a graph bucket."""
        q = rows.q
        batch = bucket(rows.batch, self.config.graph_max_batch)
        width = width_bucket(rows.width)
        bs, null = self.block_size, self.null_block
        pos, slots, ctx = pack_rows(rows, bs, null, batch)
        on_device = isinstance(ids, torch.Tensor)
        host_ids = [0] * (batch * q) if on_device else list(ids) + [0] * ((batch - rows.batch) * q)
        table_rows = [self.tables.row(s) for s in rows.seqs]
        table_rows += [self.tables.null_row] * (batch - rows.batch)
        st = self.staging
        flat_seg = st.add(host_ids + pos + slots + ctx)
        rows_seg = st.add(table_rows)
        updates = self.tables.stage(st)
        staged = st.send()
        self.tables.apply(staged, updates)
        n = rows.batch * q
        self.static_steps += 1
        if not self.use_graphs:
            flat = torch.empty(batch * (4 * q + width), dtype=torch.long, device=self.device)
            self._fill(flat, staged, flat_seg, rows_seg, ids, batch, width, q, n)
            return self._decode_fn(*split_flat(flat, batch, width, q))[0, :n], staged
        g = self._graphs.get((batch, width, q))
        if g is None:
            try:
                g = self._capture(batch, width, q)
            except RuntimeError as e:  # a model whose forward cannot be captured: run eager
                self.use_graphs, self.graph_error = False, repr(e)
                flat = torch.empty(batch * (4 * q + width), dtype=torch.long, device=self.device)
                self._fill(flat, staged, flat_seg, rows_seg, ids, batch, width, q, n)
                return self._decode_fn(*split_flat(flat, batch, width, q))[0, :n], staged
        self._fill(g.inputs, staged, flat_seg, rows_seg, ids, batch, width, q, n)
        g.graph.replay()
        self.graph_replays += 1
        return g.logits[0, :n], staged

    def _fill(
        self,
        flat: torch.Tensor,
        staged: Staged,
        flat_seg: int,
        rows_seg: int,
        ids: Seq[int] | torch.Tensor,
        batch: int,
        width: int,
        q: int,
        n: int,
    ) -> None:
        """Device-to-device: the staged ids/positions/slots/contexts, then the gathered block
        tables, into a static input buffer (`split_flat` layout)."""
        t = batch * q
        flat[: 4 * t].copy_(staged.ints(flat_seg))
        flat[4 * t :].view(batch, width).copy_(self.tables.gather(staged.ints(rows_seg), width))
        if isinstance(ids, torch.Tensor):
            flat[:n].copy_(ids.reshape(-1))

    def _capture(self, batch: int, width: int, q: int) -> _Graph:
        t0 = time.perf_counter()
        try:
            return self._capture_graph(batch, width, q)
        finally:
            self.warmup_s += time.perf_counter() - t0

    def _capture_graph(self, batch: int, width: int, q: int) -> _Graph:
        flat = torch.zeros(batch * (4 * q + width), dtype=torch.long, device=self.device)
        args = split_flat(flat, batch, width, q)
        ids, pos, slots, tables, ctx = args
        slots.fill_(self.null_block * self.block_size)
        tables.fill_(self.null_block)
        ctx.fill_(1)
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up (and compile, when on) outside the capture
                self._decode_fn(ids, pos, slots, tables, ctx)
        torch.cuda.current_stream().wait_stream(stream)
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool):
            logits = self._decode_fn(ids, pos, slots, tables, ctx)
        g = _Graph(graph, flat, logits)
        self._graphs[(batch, width, q)] = g
        return g

    def capture_graphs(self, batch_sizes: Seq[int], widths: Seq[int], qs: Seq[int] = (1,)) -> None:
        """Capture ahead of time (largest first, so later graphs reuse the pool's memory)."""
        if not self.use_graphs:
            return
        with torch.inference_mode():
            for q in sorted(qs, reverse=True):
                for b in sorted(batch_sizes, reverse=True):
                    for w in sorted(widths, reverse=True):
                        key = (bucket(b, self.config.graph_max_batch), width_bucket(w), q)
                        if key not in self._graphs:
                            self._capture(*key)

    # -- block copies ------------------------------------------------------------------------
    def copy_blocks(self, ops: Seq[CopyOp]) -> None:
        if not ops or self.cpu_kv is None:
            return
        for op in ops:  # in order: a block may be written out and refilled in one step
            if op.direction == "out":
                self.cpu_kv[op.cpu].copy_(self.kv[:, :, op.gpu], non_blocking=False)
            else:
                self.kv[:, :, op.gpu].copy_(self.cpu_kv[op.cpu], non_blocking=True)


RunnerFactory = Callable[[torch.nn.Module, EngineConfig], Runner]
