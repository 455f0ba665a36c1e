"""Tiny random-init transformers models and a byte-level chat tokenizer, built offline."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 320
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_model(arch: str = "qwen2", seed: int = 0, layers: int = 2, window: int = 4096) -> Any:
    common: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=window,
    )
    torch.manual_seed(seed)
    if arch == "qwen2":
        model: Any = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    model.generation_config = GenerationConfig(eos_token_id=None, pad_token_id=0)  # type: ignore[no-untyped-call]
    return model.eval()


def near_model(eps: float, layers: int = 4, keep: int = 2, arch: str = "qwen2") -> Any:
    """A tiny model whose layers past `keep` have their output projections scaled by `eps`:
    its first `keep` layers (a self-draft) agree with it more the smaller `eps` is."""
    model = tiny_model(arch, layers=layers)
    with torch.no_grad():
        for layer in model.model.layers[keep:]:
            layer.self_attn.o_proj.weight.mul_(eps)
            layer.mlp.down_proj.weight.mul_(eps)
    return model


def noisy_copy(model: Any, scale: float, seed: int = 5) -> Any:
    """A separate draft model: `model` with Gaussian noise on its head."""
    draft = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = draft.lm_head.weight
        w.add_(torch.randn(w.shape, generator=g) * w.std() * scale)
    return draft


def greedy_reference(model: Any, prompt: Sequence[int], n: int) -> list[int]:
    """transformers' own `generate` (sdpa attention, its dynamic cache), greedy, n tokens."""
    ref: Any = copy.deepcopy(model)
    ref.set_attn_implementation("sdpa")
    with torch.no_grad():
        ids = torch.tensor([list(prompt)])
        # An explicit mask: `generate` would otherwise mask prompt tokens equal to pad_token_id.
        out = ref.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False
        )
    return [int(t) for t in out[0, len(prompt) :].tolist()]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    return fast


@pytest.fixture
def model_factory() -> Callable[..., Any]:
    return tiny_model


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return byte_tokenizer()
