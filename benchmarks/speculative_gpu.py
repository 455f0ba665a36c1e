"""Speculative decoding on a GPU: a controlled Qwen2.5-7B-architecture pair (bf16, random init).

The target is a Qwen2.5-7B-shaped model whose layers from `L` on have their output
projections scaled by `eps` (full compute, near-identical function); the draft is its first
`L` layers plus norm and head (the self-draft; a separate-model draft with the same weights is
measured once too). `eps` is bisected for each acceptance level. All ratios come from this one
run, against the same engine decoding with the target alone (CUDA graphs on both sides).

1. Token level: greedy speedup vs acceptance for k in 2..8 and adaptive k (3 interleaved
   repetitions, medians); outputs must equal the target's.
2. Step level (ATTS): 16 samples x 16 steps of K tokens at alpha = 0.2 against target-only
   decoding of the same samples; realized rejection rates at alpha in {0.05, 0.1, 0.2, 0.4}
   over longer runs.

    python -m benchmarks.speculative_gpu              # one H100/H200, ~4-6 minutes
    python -m benchmarks.speculative_gpu --tiny --out /tmp/s.json   # tiny sizes on CPU

Writes $OUT/speculative_gpu.json (or --out) after every section, so a timeout keeps what ran.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from benchmarks import speculative as sp
from benchmarks.machine import describe
from harness.llm.engine.config import EngineConfig
from harness.llm.engine.draft import streamed_bytes


@dataclass(frozen=True)
class Sizes:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    draft_layers: int  # L
    prompt: int
    token_batch: int  # sequences decoded together at token level
    token_new: int
    ks: tuple[int, ...]
    levels: tuple[float, ...]  # acceptance rates the eps bisection aims at
    calib_new: int
    reps: int
    step_samples: int
    step_steps: int
    step_tokens: int  # K
    alphas: tuple[float, ...]
    guarantee_steps: int  # steps per sample for the rejection-rate runs
    num_blocks: int


FULL = Sizes(
    hidden=3584,
    intermediate=18944,
    layers=28,
    heads=28,
    kv_heads=4,
    vocab=152064,
    draft_layers=1,
    prompt=128,
    token_batch=4,
    token_new=128,
    ks=(2, 4, 6, 8),
    levels=(0.6, 0.7, 0.8, 0.9),
    calib_new=128,  # the timed length: acceptance drifts with output length
    reps=3,
    step_samples=16,
    step_steps=16,
    step_tokens=16,
    alphas=(0.05, 0.1, 0.2, 0.4),
    guarantee_steps=64,
    num_blocks=4096,
)
TINY = Sizes(
    hidden=64,
    intermediate=128,
    layers=4,
    heads=4,
    kv_heads=2,
    vocab=320,
    draft_layers=1,
    prompt=16,
    token_batch=2,
    token_new=12,
    ks=(2, 4),
    levels=(0.8,),
    calib_new=12,
    reps=2,
    step_samples=4,
    step_steps=3,
    step_tokens=4,
    alphas=(0.2, 0.4),
    guarantee_steps=6,
    num_blocks=512,
)


def build_target(s: Sizes, device: torch.device, dtype: torch.dtype) -> Any:
    cfg = Qwen2Config(
        vocab_size=s.vocab,
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(eos_token_id=None, pad_token_id=0)  # type: ignore[no-untyped-call]
    return model.eval()


def _params(model: Any, layers: int | None = None) -> int:
    total = sum(p.numel() for p in model.parameters())
    if layers is None:
        return total
    dropped = sum(p.numel() for layer in model.model.layers[layers:] for p in layer.parameters())
    return total - dropped


class Bench:
    def __init__(self, s: Sizes, device: torch.device, out_path: str, start: float) -> None:
        self.s = s
        self.device = device
        self.out_path = out_path
        self.start = start
        self.report: dict[str, Any] = {"device": str(device), "errors": {}}

    def save(self) -> None:
        self.report["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        os.makedirs(os.path.dirname(os.path.abspath(self.out_path)), exist_ok=True)
        with open(self.out_path, "w") as fh:
            json.dump(self.report, fh, indent=2)

    def section(self, name: str, fn: Any) -> None:
        try:
            fn()
        except Exception as e:  # one failing section must not lose the others
            self.report["errors"][name] = "".join(traceback.format_exception(e))[-4000:]
        self.save()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, runs on CPU in seconds")
    ap.add_argument("--out", default=None, help="JSON path (default $OUT/speculative_gpu.json)")
    ap.add_argument("--draft-layers", type=int, default=None, help="L (default 1)")
    args = ap.parse_args(argv)
    s = TINY if args.tiny else FULL
    if args.draft_layers:
        s = Sizes(**{**asdict(s), "draft_layers": args.draft_layers})
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    out_path = args.out or os.path.join(os.environ.get("OUT", "."), "speculative_gpu.json")
    bench = Bench(s, device, out_path, time.perf_counter())
    rep = bench.report
    rep["machine"] = describe()
    rep["sizes"] = asdict(s)
    model = build_target(s, device, dtype)
    L = s.draft_layers
    rep["target_params"] = _params(model)
    rep["draft_params"] = _params(model, L)
    rep["draft_size_ratio"] = rep["draft_params"] / rep["target_params"]
    rep["draft_streamed_bytes_ratio"] = streamed_bytes(model, L) / streamed_bytes(model)
    cost = float(rep["draft_streamed_bytes_ratio"])
    scale = sp.ScaledLayers(model, L)
    config = EngineConfig(
        block_size=16,
        num_blocks=s.num_blocks,
        max_num_seqs=64,
        max_batched_tokens=8192,
        max_model_len=32768,
        policy="none",
        cuda_graphs=True,
    )
    runners = sp.build_runners(model, config, L, separate=True)
    token_prompts = sp.random_prompts(s.token_batch, s.prompt, s.vocab, seed=1)
    step_prompts = sp.random_prompts(s.step_samples, s.prompt, s.vocab, seed=2)
    levels: dict[str, dict[str, Any]] = {}
    rep["token"] = levels

    def acceptance() -> float:
        run = runners.timed(sp.token_policy(4, False, cost), token_prompts, s.calib_new)
        return run.acceptance or 0.0

    def calibration() -> None:
        for level in s.levels:
            eps, acc = sp.calibrate_eps(scale, acceptance, level, iters=8 if not args.tiny else 4)
            levels[f"{level}"] = {"eps": eps, "calibration_acceptance": acc}

    def token_level() -> None:
        for row in levels.values():
            scale.set(row["eps"])
            variants: dict[str, Any] = {f"k{k}": ("fixed", k) for k in s.ks}
            variants["adaptive"] = ("adaptive", max(s.ks))
            times: dict[str, list[float]] = {name: [] for name in ["target", *variants]}
            accs: dict[str, list[float]] = {name: [] for name in variants}
            match = True
            agree: list[float] = []
            for _ in range(s.reps):  # interleaved: noise hits every variant alike
                base = runners.timed(None, token_prompts, s.token_new)
                times["target"].append(base.seconds)
                for name, (kind, k) in variants.items():
                    pol = sp.token_policy(k, kind == "adaptive", cost)
                    run = runners.timed(pol, token_prompts, s.token_new)
                    times[name].append(run.seconds)
                    accs[name].append(run.acceptance or 0.0)
                    match = match and run.outputs == base.outputs
                    agree.append(sp.prefix_agreement(run.outputs, base.outputs))
            t0 = sp.median(times["target"])
            row["target_tok_per_s"] = s.token_batch * s.token_new / t0
            row["outputs_equal_target"] = match
            # bf16: passes of different shapes may round a near-tie argmax differently.
            row["token_prefix_agreement"] = min(agree) if agree else 1.0
            for name in variants:
                row[name] = {
                    "speedup": t0 / sp.median(times[name]),
                    "acceptance": sp.median(accs[name]),
                    "seconds": times[name],
                }
            row["target_seconds"] = times["target"]
            bench.save()
        best = min(levels.values(), key=lambda r: abs(r["calibration_acceptance"] - 0.8))
        names = [f"k{k}" for k in s.ks] + ["adaptive"]
        top = max(names, key=lambda n: best[n]["speedup"])
        rep["token_speedup_at_acceptance_0.8"] = best[top]["speedup"]
        rep["token_best_variant_at_0.8"] = top
        rep["token_acceptance_measured_at_0.8"] = best[top]["acceptance"]
        rep["token_outputs_equal_target"] = all(r["outputs_equal_target"] for r in levels.values())

    def separate_draft() -> None:
        row = min(levels.values(), key=lambda r: abs(r["calibration_acceptance"] - 0.8))
        scale.set(row["eps"])
        fixed = [k for k in s.ks if f"k{k}" in row]
        k = max(fixed, key=lambda k: row[f"k{k}"]["speedup"]) if fixed else 4
        base = runners.timed(None, token_prompts, s.token_new)
        pol = sp.token_policy(k, False, cost)
        run = runners.timed(pol, token_prompts, s.token_new, separate=True)
        base2 = runners.timed(None, token_prompts, s.token_new)
        rep["token_separate_draft_at_0.8"] = {
            "k": k,
            "speedup": min(base.seconds, base2.seconds) / run.seconds,
            "acceptance": run.acceptance,
            "outputs_equal_target": run.outputs == base.outputs,
        }

    def step_level() -> None:
        row = min(levels.values(), key=lambda r: abs(r["calibration_acceptance"] - 0.8))
        scale.set(row["eps"])
        new = s.step_steps * s.step_tokens
        k = max(s.ks)
        base_t: list[float] = []
        step_t: list[float] = []
        stats: Any = None
        for _ in range(s.reps):
            base_t.append(runners.timed(None, step_prompts, new).seconds)
            pol = sp.step_policy(0.2, s.step_tokens, k, cost)
            step_t.append(runners.timed(pol, step_prompts, new).seconds)
            stats = pol.stats()
        rep["step_speedup_alpha_0.2"] = sp.median(base_t) / sp.median(step_t)
        rep["step"] = {
            "eps": row["eps"],
            "samples": s.step_samples,
            "steps": s.step_steps,
            "step_tokens": s.step_tokens,
            "target_tok_per_s": s.step_samples * new / sp.median(base_t),
            "step_tok_per_s": s.step_samples * new / sp.median(step_t),
            "target_seconds": base_t,
            "step_seconds": step_t,
            "alpha_0.2_stats": asdict(stats) if stats else None,
        }
        bench.save()
        rates: dict[str, Any] = {}
        long_new = s.guarantee_steps * s.step_tokens
        for alpha in s.alphas:
            pol = sp.step_policy(alpha, s.step_tokens, k, cost)
            runners.timed(pol, step_prompts, long_new)
            st = pol.stats()
            rates[f"{alpha}"] = {
                "steps_scored": st.steps_scored,
                "rejection_rate": st.rejection_rate,
                "excess": st.rejection_rate - alpha,
                "draft_tokens": st.draft_tokens,
                "target_tokens": st.target_tokens,
            }
            bench.save()
        rep["step"]["rejection_rates"] = rates
        rep["rejection_rate_max_excess"] = max(r["excess"] for r in rates.values())

    def graphs() -> None:
        rep["graphs"] = {
            "target_replays": runners.target.graph_replays,
            "draft_replays": runners.self_draft.graph_replays,
            "captured": len(runners.target._graphs) + len(runners.self_draft._graphs),
            "graph_error": runners.target.graph_error or runners.self_draft.graph_error,
            "warmup_s": runners.warmup_s,
        }
        if device.type == "cuda":
            rep["graphs"]["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30

    bench.section("calibration", calibration)
    bench.section("token", token_level)
    bench.section("separate_draft", separate_draft)
    bench.section("step", step_level)
    bench.section("graphs", graphs)
    return rep


if __name__ == "__main__":
    print(json.dumps(main(), indent=2)[:4000])
