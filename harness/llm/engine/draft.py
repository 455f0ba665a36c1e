"""Draft models for speculative decoding: the target's own first layers, or a second model.

`self_draft(model, layers)` is a view of a transformers causal LM that runs only its first
`layers` decoder layers, then its final norm and head. It shares every parameter with the
target (no second model in memory), and the layers it runs are the target's first layers,
so its KV cache is the first `layers` layers of the target's own cache.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch

from harness.errors import ConfigError


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layer list of a transformers causal LM (`model.model.layers` and kin)."""
    base = getattr(model, str(getattr(model, "base_model_prefix", "model")), None)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(
            f"cannot find the decoder layers of {type(model).__name__} for a self-draft",
            hint="give a separate draft model (--draft-model SPEC)",
        )
    return layers


def self_draft(model: torch.nn.Module, layers: int) -> torch.nn.Module:
    """The first `layers` decoder layers of `model` plus its final norm and head, as a model.

    Shallow copies of the outer modules with a shorter layer list: parameters, buffers and
    the config are shared with the target, and each layer keeps its `layer_idx`.
    """
    full = decoder_layers(model)
    if not 1 <= layers < len(full):
        raise ConfigError(
            f"a self-draft needs 1 to {len(full) - 1} layers of the target's {len(full)}, "
            f"got {layers}"
        )
    prefix = str(getattr(model, "base_model_prefix", "model"))
    base = getattr(model, prefix)
    view_base = copy.copy(base)
    view_base._modules = dict(base._modules)
    view_base._modules["layers"] = torch.nn.ModuleList(list(full)[:layers])
    view = copy.copy(model)
    view._modules = dict(model._modules)
    view._modules[prefix] = view_base
    return view


def default_self_draft_layers(model: torch.nn.Module) -> int:
    """A quarter of the target's layers (at least one)."""
    return max(1, len(decoder_layers(model)) // 4)


def streamed_bytes(model: torch.nn.Module, layers: int | None = None) -> int:
    """Weight bytes one decode step reads: every parameter but the input embedding (a
    lookup), counting only the first `layers` decoder layers when given."""
    emb, out = _embeddings(model)
    skip = {id(p) for p in emb.parameters()} if emb is not None else set()
    head = {id(p) for p in out.parameters()} if out is not None else set()
    skip -= head  # tied embeddings: the head reads them every step
    dropped: set[int] = set()
    if layers is not None:
        for layer in list(decoder_layers(model))[layers:]:
            dropped.update(id(p) for p in layer.parameters())
    total = 0
    for p in _unique(model.parameters()):
        if id(p) not in skip and id(p) not in dropped:
            total += p.numel() * p.element_size()
    return total


def _embeddings(model: torch.nn.Module) -> tuple[torch.nn.Module | None, torch.nn.Module | None]:
    """(input embedding, output head) of a transformers model, when it has them."""
    m: Any = model
    found: list[torch.nn.Module | None] = []
    for name in ("get_input_embeddings", "get_output_embeddings"):
        get = getattr(m, name, None)
        mod = get() if callable(get) else None
        found.append(mod if isinstance(mod, torch.nn.Module) else None)
    return found[0], found[1]


def _unique(params: Iterable[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def vocab_size(model: torch.nn.Module) -> int:
    _, out = _embeddings(model)
    weight = getattr(out, "weight", None)
    if isinstance(weight, torch.Tensor):
        return int(weight.shape[0])
    cfg: Any = model.config
    return int(cfg.vocab_size)


def align_vocab(logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """Draft logits over the target's vocabulary: extra ids cut, missing ids at -inf."""
    n = logits.shape[-1]
    if n == vocab:
        return logits
    if n > vocab:
        return logits[..., :vocab]
    pad = logits.new_full((*logits.shape[:-1], vocab - n), float("-inf"))
    return torch.cat([logits, pad], dim=-1)


def delimiter_ids(tokenizer: Any, delimiter: str) -> frozenset[int]:
    """Every token whose text contains `delimiter` (for "\\n": "\\n", "\\n\\n", ".\\n" ...)."""
    if not delimiter:
        return frozenset()
    n = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
    return frozenset(i for i, t in enumerate(texts) if delimiter in t)
