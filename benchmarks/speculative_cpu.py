"""Token-level speculative decoding on this CPU: SmolLM2-135M-Instruct as the target.

1. The self-draft as it is: the target's first L layers plus its norm and head. Acceptance
   for several L (greedy, fixed k = 4), then target-only vs speculation with the default
   self-draft (fixed k, and adaptive k) on the same engine and prompts, timed.
2. Controlled: the same weights with layers >= L scaled by eps (benchmarks/speculative.py),
   eps bisected for 80% acceptance: what the engine delivers on this CPU when the draft
   agrees, against that modified target decoding alone.
3. Step level (ATTS) at alpha = 0.2, 128 new tokens in steps of 16, for the real self-draft
   and the controlled pair: throughput against target-only, realized rejection rate (over
   the timed runs, after a calibration run), draft share.

Greedy, 4 chat prompts decoded together, 64 new tokens each (EOS ignored). The machine is
shared and noisy: variants are interleaved, repeated, and medians reported.

    python -m benchmarks.speculative_cpu   # ~8 minutes; writes
                                           # benchmarks/results/speculative_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchmarks import speculative as sp
from benchmarks.machine import describe
from harness.llm.base import Message
from harness.llm.engine.client import encode_chat
from harness.llm.engine.config import EngineConfig
from harness.llm.engine.draft import default_self_draft_layers, streamed_bytes
from harness.llm.local import load_pretrained

MODEL_DIR = Path.home() / ".cache" / "harness" / "models" / "smollm2-135m"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = (
    "Write a Python function that checks whether a string is a palindrome.",
    "Explain what a race condition is, with a short example.",
    "Fix this bug: def add(a, b): return a - b",
    "List three ways to speed up a slow SQL query.",
)
NEW = 64
STEP_TOKENS = 16
STEP_NEW = 128  # 8 steps per prompt
REPS = 5
DEPTHS = (7, 15, 22, 26)
OUT = Path(__file__).parent / "results" / "speculative_cpu.json"


def _timed_variants(
    runners: sp.Runners,
    variants: dict[str, Any],
    prompts: list[list[int]],
    cost: float,
) -> dict[str, Any]:
    times: dict[str, list[float]] = {"target": [], **{name: [] for name in variants}}
    accs: dict[str, list[float]] = {name: [] for name in variants}
    equal = True
    for _ in range(REPS):
        base = runners.timed(None, prompts, NEW)
        times["target"].append(base.seconds)
        for name, (k, adaptive) in variants.items():
            run = runners.timed(sp.token_policy(k, adaptive, cost), prompts, NEW)
            times[name].append(run.seconds)
            accs[name].append(run.acceptance or 0.0)
            equal = equal and run.outputs == base.outputs
    t0 = sp.median(times["target"])
    out: dict[str, Any] = {
        "target_tok_per_s": len(prompts) * NEW / t0,
        "target_seconds": times["target"],
        "outputs_equal_target": equal,
    }
    for name in variants:
        out[name] = {
            "speedup": t0 / sp.median(times[name]),
            "tok_per_s": len(prompts) * NEW / sp.median(times[name]),
            "acceptance": sp.median(accs[name]),
            "seconds": times[name],
        }
    return out


def _step_level(
    runners: sp.Runners, prompts: list[list[int]], cost: float, alpha: float = 0.2
) -> dict[str, Any]:
    """ATTS against target-only on the same prompts (interleaved, medians). One policy for
    every run, as in a long-lived engine: an untimed first run fills its calibration window,
    the timed runs' steps give the realized rejection rate."""
    pol = sp.step_policy(alpha, STEP_TOKENS, 4, cost)
    runners.timed(pol, prompts, STEP_NEW)  # calibration
    warm = pol.stats()
    base_t: list[float] = []
    step_t: list[float] = []
    for _ in range(REPS):
        base_t.append(runners.timed(None, prompts, STEP_NEW).seconds)
        step_t.append(runners.timed(pol, prompts, STEP_NEW).seconds)
    timed = pol.stats().since(warm)
    return {
        "alpha": alpha,
        "step_tokens": STEP_TOKENS,
        "new_tokens": STEP_NEW,
        "speedup": sp.median(base_t) / sp.median(step_t),
        "target_tok_per_s": len(prompts) * STEP_NEW / sp.median(base_t),
        "step_tok_per_s": len(prompts) * STEP_NEW / sp.median(step_t),
        "realized_rejection_rate": timed.rejection_rate,
        "draft_share": timed.draft_share,
        "timed_runs_stats": asdict(timed),
        "target_seconds": base_t,
        "step_seconds": step_t,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    model, tok = load_pretrained(str(MODEL_DIR), gguf_file=GGUF, device="cpu")
    prompts = [encode_chat(tok, [Message("user", p)]) for p in PROMPTS]
    layers = default_self_draft_layers(model)
    report: dict[str, Any] = {
        "device": "cpu",
        "machine": describe(),
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, float32)",
        "prompts": len(prompts),
        "prompt_tokens": [len(p) for p in prompts],
        "new_tokens": NEW,
        "reps": REPS,
        "greedy": True,
        "torch_threads": torch.get_num_threads(),
    }

    def save() -> None:
        report["elapsed_s"] = round(time.perf_counter() - start, 1)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2)

    config = EngineConfig(block_size=16, num_blocks=128, max_batched_tokens=2048, policy="none")
    full = streamed_bytes(model)
    # 1. The self-draft as it is.
    depth: dict[str, Any] = {}
    for L in DEPTHS:
        runners = sp.build_runners(model, config, L, separate=False)
        run = runners.timed(sp.token_policy(4, False, 0.0), prompts, NEW)
        depth[str(L)] = {
            "acceptance_k4": run.acceptance,
            "streamed_bytes_ratio": streamed_bytes(model, L) / full,
        }
        report["self_draft_acceptance_by_layers"] = depth
        save()
    cost = streamed_bytes(model, layers) / full
    runners = sp.build_runners(model, config, layers, separate=False)
    report["self_draft"] = {
        "layers": layers,
        "of_layers": len(model.model.layers),
        "cost_ratio": cost,
        **_timed_variants(
            runners, {"k2": (2, False), "k4": (4, False), "adaptive": (4, True)}, prompts, cost
        ),
    }
    save()
    # 2. Controlled agreement on the same weights.
    scale = sp.ScaledLayers(model, layers)

    def acceptance() -> float:
        run = runners.timed(sp.token_policy(4, False, cost), prompts, NEW)
        return run.acceptance or 0.0

    eps, acc = sp.calibrate_eps(scale, acceptance, 0.8, lo=1e-3, hi=1.0, iters=6)
    report["controlled"] = {
        "layers": layers,
        "eps": eps,
        "calibration_acceptance": acc,
        **_timed_variants(
            runners, {"k2": (2, False), "k4": (4, False), "adaptive": (4, True)}, prompts, cost
        ),
    }
    save()
    # 3. Step level: the controlled pair (still scaled), then the real self-draft.
    report["step_level"] = {"controlled": _step_level(runners, prompts, cost)}
    save()
    scale.set(1.0)
    report["step_level"]["self_draft"] = _step_level(runners, prompts, cost)
    save()
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
