"""benchmarks/speculative_gpu.py runs end to end at tiny sizes on CPU (the GPU run is its
own job), and its controlled pair really is a draft/target pair."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks import speculative as sp
from benchmarks import speculative_gpu
from tests.llm.engine.conftest import greedy_reference, near_model


def test_tiny_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "speculative_gpu.json"
    report = speculative_gpu.main(["--tiny", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert not saved["errors"], saved["errors"]
    assert saved["device"] == "cpu" and saved["machine"]["cores"]
    for key in (
        "token_speedup_at_acceptance_0.8",
        "step_speedup_alpha_0.2",
        "draft_size_ratio",
        "rejection_rate_max_excess",
    ):
        assert isinstance(saved[key], float), key
    assert saved["token_outputs_equal_target"] is True  # float32: exact greedy equality
    assert saved["token_separate_draft_at_0.8"]["outputs_equal_target"] is True
    assert 0.0 < saved["draft_size_ratio"] < 1.0
    assert report["step"]["alpha_0.2_stats"]["steps_scored"] > 0


def test_scaled_layers_and_the_shared_weight_draft() -> None:
    model = near_model(1.0)
    prompt = [3, 17, 200, 5]
    before = greedy_reference(model, prompt, 6)
    scale = sp.ScaledLayers(model, keep=2)
    scale.set(0.0)  # later layers add nothing: the target is its first two layers
    draft = sp.shared_weight_draft(model, 2)
    assert len(draft.model.layers) == 2
    tensors = [*draft.parameters(), *draft.buffers()]
    assert all(t.device.type == "cpu" for t in tensors)  # nothing left on the meta device
    ids = torch.tensor([prompt])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, draft(ids).logits, atol=1e-5)
    scale.set(1.0)  # from the saved originals: back to the same function exactly
    assert greedy_reference(model, prompt, 6) == before
