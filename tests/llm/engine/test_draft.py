"""Draft helpers: the self-draft view, vocabulary alignment, step delimiters, weight bytes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from harness.errors import ConfigError
from harness.llm.engine.draft import (
    align_vocab,
    default_self_draft_layers,
    delimiter_ids,
    self_draft,
    streamed_bytes,
)
from tests.llm.engine.conftest import greedy_reference, tiny_model


def test_self_draft_is_the_first_layers_sharing_every_weight() -> None:
    model = tiny_model(layers=4)
    view = self_draft(model, 2)
    assert len(view.model.layers) == 2 and len(model.model.layers) == 4  # target untouched
    shared = {p.data_ptr() for p in model.parameters()}
    assert all(p.data_ptr() in shared for p in view.parameters())  # no second copy
    cut: Any = copy.deepcopy(model)
    cut.model.layers = cut.model.layers[:2]
    cut.config.num_hidden_layers = 2
    prompt = [5, 9, 200, 31, 7]
    assert greedy_reference(view, prompt, 8) == greedy_reference(cut, prompt, 8)
    assert default_self_draft_layers(model) == 1
    for bad in (0, 4):
        with pytest.raises(ConfigError, match="1 to 3 layers"):
            self_draft(model, bad)
    with pytest.raises(ConfigError, match="decoder layers"):
        self_draft(torch.nn.Linear(2, 2), 1)


def test_draft_logits_are_aligned_to_the_targets_vocabulary() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    assert align_vocab(logits, 2).tolist() == [[1.0, 2.0]]
    padded = align_vocab(logits, 5)
    assert padded[0, :3].tolist() == [1.0, 2.0, 3.0] and torch.isinf(padded[0, 3:]).all()
    assert align_vocab(logits, 3) is logits


def test_delimiters_are_every_token_containing_the_text(tokenizer: Any) -> None:
    ids = delimiter_ids(tokenizer, "\n")
    assert ids == {i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])}
    assert tokenizer.encode("\n")[0] in ids and tokenizer.encode("a")[0] not in ids
    assert delimiter_ids(tokenizer, "") == frozenset()


def test_streamed_bytes_count_the_head_and_the_layers_run() -> None:
    model = tiny_model(layers=4)
    per_layer = sum(p.numel() for p in model.model.layers[0].parameters()) * 4
    head = model.lm_head.weight.numel() * 4
    norm = model.model.norm.weight.numel() * 4
    assert streamed_bytes(model) == 4 * per_layer + head + norm  # no input embedding
    assert streamed_bytes(model, 1) == per_layer + head + norm
