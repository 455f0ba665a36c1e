"""benchmarks/engine_gpu.py runs end to end at tiny sizes on CPU (the GPU run is its own job)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import engine_gpu


def test_tiny_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "engine_gpu.json"
    report = engine_gpu.main(["--tiny", "--skip-generate-batch", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert not saved["errors"], saved["errors"]
    assert saved["device"] == "cpu" and saved["weight_bytes"] > 0
    for key in (
        "decode_b1_roofline_fraction",
        "batch64_speedup_vs_transformers",
        "jct_ttl_over_none",
        "jct_ttl_over_lru",
        "prefill_recompute_ttl_over_none",
    ):
        assert isinstance(saved[key], float) and saved[key] >= 0.0, key
    assert report["agent"]["results"]["ttl"]["generated_tokens"] > 0
