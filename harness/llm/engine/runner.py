"""The model runner: owns the KV tensors, packs a scheduled step, runs the model, samples.

All tensors of the engine live here. One forward pass serves every scheduled sequence (decodes
and prefill chunks packed into one row); on CUDA, pure-decode steps replay captured CUDA graphs
bucketed by batch size and block-table width.
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
from harness.llm.engine.plan import ScheduledSeq, SchedulerOutput
from harness.llm.engine.sampling import sample


class Runner(Protocol):
    """What the engine loop needs from a runner."""

    warmup_s: float  # one-time costs inside execute() so far (graph capture, compilation)

    def execute(self, out: SchedulerOutput) -> list[int | None]: ...

    def release(self, seq_id: int) -> None: ...


def _bucket(n: int, cap: int) -> int:
    """Graph batch bucket: the next power of two, capped."""
    b = 1
    while b < n:
        b *= 2
    return min(b, cap) if n <= cap else n


def _width_bucket(w: int) -> int:
    """Graph block-table width: rounded up at ~25% granularity (few graphs, little padding)."""
    if w <= 8:
        return _bucket(w, 8)
    step = 1 << (w.bit_length() - 3)
    return -(-w // step) * step


@dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: torch.Tensor  # flat: ids, positions, slots, context lengths, block tables
    logits: torch.Tensor


def _split(flat: torch.Tensor, batch: int, width: int) -> tuple[torch.Tensor, ...]:
    """Views (ids [1, B], positions [1, B], slots [B], tables [B, W], ctx [B]) of one buffer,
    so a step's inputs reach the device in a single copy."""
    b = batch
    return (
        flat[:b].view(1, b),
        flat[b : 2 * b].view(1, b),
        flat[2 * b : 3 * b],
        flat[4 * b :].view(b, width),
        flat[3 * b : 4 * b],
    )


def kv_dims(model: torch.nn.Module) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a transformers causal LM."""
    cfg: Any = model.config
    get_text = getattr(cfg, "get_text_config", None)
    if callable(get_text):
        cfg = get_text()
    heads = int(cfg.num_attention_heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    return int(cfg.num_hidden_layers), kv_heads, head_dim


def kv_bytes_per_block(model: torch.nn.Module, block_size: int) -> int:
    """Device bytes one KV block takes for this model (to size `num_blocks` from free memory)."""
    layers, kv_heads, head_dim = kv_dims(model)
    itemsize = next(model.parameters()).element_size()
    return layers * 2 * block_size * kv_heads * head_dim * itemsize


def decode_forward(
    model: torch.nn.Module,
    k_cache: list[torch.Tensor],
    v_cache: list[torch.Tensor],
    block_size: int,
    ids: torch.Tensor,
    pos: torch.Tensor,
    slots: torch.Tensor,
    tables: torch.Tensor,
    ctx: torch.Tensor,
) -> torch.Tensor:
    """A padded decode step. A free function, so one compiled version serves every runner of
    a model (the caches are inputs, not guarded attributes)."""
    batch, width = tables.shape
    span = torch.arange(width * block_size, device=tables.device)
    mask = (span[None] < ctx[:, None]).view(batch, 1, 1, width * block_size)
    meta = PagedMetadata(k_cache, v_cache, block_size, slots, batch, tables, mask, [])
    out = model(
        input_ids=ids, position_ids=pos, use_cache=False, logits_to_keep=0, paged_metadata=meta
    )
    logits: torch.Tensor = out.logits
    return logits


_COMPILED: list[Callable[..., torch.Tensor]] = []


def _compiled_decode() -> Callable[..., torch.Tensor]:
    """`torch.compile(decode_forward)`, made on first use: it fuses the ~40 small kernels per
    decoder layer (norms, RoPE, residuals) that dominate a batch-1 decode step."""
    if not _COMPILED:
        _COMPILED.append(torch.compile(decode_forward, dynamic=True))
    return _COMPILED[0]


class ModelRunner:
    """Runs a transformers causal LM over a paged KV cache it allocates."""

    def __init__(self, model: torch.nn.Module, config: EngineConfig) -> None:
        self.model = model.eval()
        self.config = config
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        layers, kv_heads, head_dim = kv_dims(model)
        model.set_attn_implementation(attention.register())  # type: ignore[operator]
        nb, bs = config.num_blocks, config.block_size
        self.block_size = bs
        self.null_block = nb  # scratch block that padded slots write to
        self.kv = torch.zeros(
            layers, 2, nb + 1, bs, kv_heads, head_dim, dtype=self.dtype, device=self.device
        )
        self.k_cache = [self.kv[i, 0].view(-1, kv_heads, head_dim) for i in range(layers)]
        self.v_cache = [self.kv[i, 1].view(-1, kv_heads, head_dim) for i in range(layers)]
        self.cpu_kv: torch.Tensor | None = None
        if config.offload:
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
        self.use_graphs = config.cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[tuple[int, int], _Graph] = {}
        self._graph_pool: Any = None
        self._generators: dict[int, torch.Generator] = {}
        self._decode_fn: Callable[..., torch.Tensor] = self.decode_step
        self.graph_replays = 0
        self.static_steps = 0
        self.warmup_s = 0.0
        self.graph_error: str | None = None  # why graphs were turned off, if they were
        self.forwards = 0

    # -- public -----------------------------------------------------------------------------
    def execute(self, out: SchedulerOutput) -> list[int | None]:
        self._copy(out.copy_ops)
        if not out.items:
            return []
        decodes = [it for it in out.items if it.num_tokens == 1]
        prefills = [it for it in out.items if it.num_tokens > 1]
        order = decodes + prefills
        with torch.inference_mode():
            cfg = self.config
            static = self.use_graphs or cfg.compile_decode or cfg.static_decode
            if not prefills and static and len(decodes) <= self.config.graph_max_batch:
                logits = self._decode_static(decodes)
            else:
                logits = self._forward(decodes, prefills)
        sampled_items = [it for it in order if it.sample]
        tokens = self._sample(logits, sampled_items) if sampled_items else []
        by_seq = {it.seq.seq_id: t for it, t in zip(sampled_items, tokens, strict=True)}
        return [by_seq.get(it.seq.seq_id) if it.sample else None for it in out.items]

    def release(self, seq_id: int) -> None:
        self._generators.pop(seq_id, None)

    # -- packing ----------------------------------------------------------------------------
    def _slot(self, table: Seq[int], pos: int) -> int:
        return table[pos // self.block_size] * self.block_size + pos % self.block_size

    def _forward(self, decodes: list[ScheduledSeq], prefills: list[ScheduledSeq]) -> torch.Tensor:
        bs, dev = self.block_size, self.device
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        keep: list[int] = []
        for it in decodes:
            s = it.seq
            if it.sample:
                keep.append(len(ids))
            ids.append(s.token_ids[it.start])
            pos.append(it.start)
            slots.append(self._slot(s.block_table, it.start))
        tables = ctx = None
        if decodes:
            width = max(len(it.seq.block_table) for it in decodes)
            rows = [
                it.seq.block_table + [self.null_block] * (width - len(it.seq.block_table))
                for it in decodes
            ]
            tables = torch.tensor(rows, dtype=torch.long).to(dev, non_blocking=True)
            ctx = torch.tensor([it.start + 1 for it in decodes], dtype=torch.long).to(dev)
        segments: list[PrefillSegment] = []
        slot_parts = [torch.tensor(slots, dtype=torch.long)]
        for it in prefills:
            s, start, n = it.seq, it.start, it.num_tokens
            seg_start = len(ids)
            ids.extend(s.token_ids[start : start + n])
            p = torch.arange(start, start + n)
            pos.extend(range(start, start + n))
            table = torch.tensor(s.block_table, dtype=torch.long)
            slot_parts.append(table[p // bs] * bs + p % bs)
            if it.sample:
                keep.append(seg_start + n - 1)
            if start == 0:
                segments.append(PrefillSegment(seg_start, n, n, None, None))
            else:
                context = start + n
                used = table[: (context + bs - 1) // bs].to(dev)
                # Built on the device: a long chunk's mask is n x context booleans.
                qpos = torch.arange(start, start + n, device=dev)
                mask = torch.arange(context, device=dev)[None, :] <= qpos[:, None]
                segments.append(PrefillSegment(seg_start, n, context, used, mask))
        mask_d = None
        if ctx is not None and tables is not None:
            mask_d = torch.arange(tables.shape[1] * bs, device=dev)[None] < ctx[:, None]
            mask_d = mask_d.view(len(decodes), 1, 1, -1)
        meta = PagedMetadata(
            self.k_cache,
            self.v_cache,
            bs,
            torch.cat(slot_parts).to(dev),
            len(decodes),
            tables,
            mask_d,
            segments,
        )
        input_ids = torch.tensor(ids, dtype=torch.long, device=dev)[None]
        positions = torch.tensor(pos, dtype=torch.long, device=dev)[None]
        keep_t = torch.tensor(keep, dtype=torch.long, device=dev)
        if not keep:
            keep_t = torch.tensor([len(ids) - 1], dtype=torch.long, device=dev)
        self.forwards += 1
        out = self.model(
            input_ids=input_ids,
            position_ids=positions,
            use_cache=False,
            logits_to_keep=keep_t,
            paged_metadata=meta,
        )
        logits: torch.Tensor = out.logits[0, : len(keep)]
        return logits

    # -- pure-decode steps: padded static shapes, CUDA graphs, optional torch.compile -------
    def decode_step(
        self,
        ids: torch.Tensor,
        pos: torch.Tensor,
        slots: torch.Tensor,
        tables: torch.Tensor,
        ctx: torch.Tensor,
    ) -> torch.Tensor:
        """One decode forward over padded inputs: what graphs capture and compile sees."""
        fn = _compiled_decode() if self.config.compile_decode else decode_forward
        return fn(
            self.model, self.k_cache, self.v_cache, self.block_size, ids, pos, slots, tables, ctx
        )

    def _decode_static(self, decodes: list[ScheduledSeq]) -> torch.Tensor:
        n = len(decodes)
        width = max(len(it.seq.block_table) for it in decodes)
        batch, width = _bucket(n, self.config.graph_max_batch), _width_bucket(width)
        pad = batch - n
        rows = [
            it.seq.block_table + [self.null_block] * (width - len(it.seq.block_table))
            for it in decodes
        ]
        rows += [[self.null_block] * width] * pad
        null_slot = self.null_block * self.block_size
        ids = [it.seq.token_ids[it.start] for it in decodes] + [0] * pad
        pos = [it.start for it in decodes] + [0] * pad
        slots = [self._slot(it.seq.block_table, it.start) for it in decodes] + [null_slot] * pad
        ctx = [it.start + 1 for it in decodes] + [1] * pad
        flat = ids + pos + slots + ctx + [b for row in rows for b in row]
        host = torch.tensor(flat, dtype=torch.long)
        keep = [i for i, it in enumerate(decodes) if it.sample]
        self.static_steps += 1
        if not self.use_graphs:
            return self._decode_fn(*_split(host.to(self.device), batch, width))[0, keep]
        g = self._graphs.get((batch, width))
        if g is None:
            try:
                g = self._capture(batch, width)
            except RuntimeError as e:  # a model whose forward cannot be captured: run eager
                self.use_graphs, self.graph_error = False, repr(e)
                return self._decode_fn(*_split(host.to(self.device), batch, width))[0, keep]
        g.inputs.copy_(host, non_blocking=True)
        g.graph.replay()
        self.graph_replays += 1
        return g.logits[0, keep]

    def _capture(self, batch: int, width: int) -> _Graph:
        t0 = time.perf_counter()
        try:
            return self._capture_graph(batch, width)
        finally:
            self.warmup_s += time.perf_counter() - t0

    def _capture_graph(self, batch: int, width: int) -> _Graph:
        flat = torch.zeros(batch * (4 + width), dtype=torch.long, device=self.device)
        args = _split(flat, batch, width)
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
        self._graphs[(batch, width)] = g
        return g

    def capture_graphs(self, batch_sizes: Seq[int], widths: Seq[int]) -> None:
        """Capture ahead of time (largest first, so later graphs reuse the pool's memory)."""
        if not self.use_graphs:
            return
        with torch.inference_mode():
            for b in sorted(batch_sizes, reverse=True):
                for w in sorted(widths, reverse=True):
                    key = (_bucket(b, self.config.graph_max_batch), _width_bucket(w))
                    if key not in self._graphs:
                        self._capture(*key)

    # -- sampling and block copies ----------------------------------------------------------
    def _sample(self, logits: torch.Tensor, items: list[ScheduledSeq]) -> list[int]:
        params = [it.seq.request.sampling for it in items]
        gens = [self._generator(it.seq.seq_id, p.seed) for it, p in zip(items, params, strict=True)]
        return sample(logits, params, gens)

    def _generator(self, seq_id: int, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        gen = self._generators.get(seq_id)
        if gen is None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seed)
            self._generators[seq_id] = gen
        return gen

    def _copy(self, ops: Seq[CopyOp]) -> None:
        if not ops or self.cpu_kv is None:
            return
        for op in ops:  # in order: a block may be written out and refilled in one step
            if op.direction == "out":
                self.cpu_kv[op.cpu].copy_(self.kv[:, :, op.gpu], non_blocking=False)
            else:
                self.kv[:, :, op.gpu].copy_(self.cpu_kv[op.cpu], non_blocking=True)


RunnerFactory = Callable[[torch.nn.Module, EngineConfig], Runner]
