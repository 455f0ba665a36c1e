"""Engine GPU benchmark on the Qwen2.5-1.5B architecture (bf16, random init), one run.

1. Batch-1 decode vs the weight-streaming roofline (weight bytes / measured copy bandwidth).
2. 64 prompts x 2048 tokens, 256 new tokens: engine vs transformers' padded `generate` and
   `generate_batch` (continuous batching).
3. The agent workload (benchmarks/agent_workload.py) under none / lru / ttl.

    python -m benchmarks.engine_gpu                 # on one H100/H200, ~6-8 minutes
    python -m benchmarks.engine_gpu --tiny --out /tmp/e.json   # tiny sizes on CPU, seconds

Writes $OUT/engine_gpu.json (or --out) after every section, so a timeout keeps what ran.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from benchmarks import agent_workload as aw
from harness.llm.engine.config import EngineConfig
from harness.llm.engine.engine import Engine
from harness.llm.engine.runner import ModelRunner
from harness.llm.engine.sequence import EngineRequest


@dataclass(frozen=True)
class Sizes:
    b1_prompt: int
    b1_new: int
    b1_generate_new: int
    batch: int
    batch_prompt: int
    batch_new: int
    chunk: int  # max_batched_tokens
    workload: aw.WorkloadSpec
    kv_fraction: float  # device KV budget / all programs' final contexts
    cpu_tier: float  # CPU offload tier for ttl, same unit


FULL = Sizes(
    b1_prompt=128,
    b1_new=256,
    b1_generate_new=128,
    batch=64,
    batch_prompt=2048,
    batch_new=256,
    chunk=8192,
    workload=aw.WorkloadSpec(
        programs=16,
        turns=6,
        system_tokens=6000,
        tool_tokens=(500, 4000),
        gen_tokens=(100, 400),
        pause_scale=0.3,
        vocab=151000,
        seed=0,
    ),
    kv_fraction=0.25,
    cpu_tier=1.0,
)
TINY = Sizes(
    b1_prompt=16,
    b1_new=12,
    b1_generate_new=6,
    batch=4,
    batch_prompt=32,
    batch_new=8,
    chunk=128,
    workload=aw.WorkloadSpec(
        programs=2,
        turns=2,
        system_tokens=64,
        tool_tokens=(16, 64),
        gen_tokens=(4, 8),
        pause_scale=0.01,
        vocab=900,
        seed=0,
    ),
    kv_fraction=0.5,
    cpu_tier=1.0,
)


def build_model(tiny: bool, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if tiny:
        cfg = Qwen2Config(
            vocab_size=1000,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32768,
        )
    else:  # Qwen/Qwen2.5-1.5B's config.json
        cfg = Qwen2Config(
            vocab_size=151936,
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        )
    torch.manual_seed(0)
    with torch.device(device):
        model: Any = Qwen2ForCausalLM(cfg)
    model = model.to(dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes per second of a device-to-device copy (read + write counted)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync(device)
    reps = 10
    t0 = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    sync(device)
    dt = time.perf_counter() - t0
    del src, dst
    return 2 * nbytes * reps / dt


def weight_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def random_prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    out: list[list[int]] = torch.randint(4, vocab, (n, length), generator=g).tolist()
    return out


def engine_for(model: Any, cfg: EngineConfig) -> Engine:
    return Engine(ModelRunner(model, cfg), cfg)


def use_sdpa(model: Any) -> None:
    model.set_attn_implementation("sdpa")


def bench_b1(
    model: Any, sz: Sizes, device: torch.device, vocab: int, opts: dict[str, Any]
) -> dict[str, Any]:
    cfg = EngineConfig(
        **opts,
        num_blocks=256,
        max_num_seqs=8,
        max_batched_tokens=sz.chunk,
        max_model_len=4096,
        policy="none",
    )
    engine = engine_for(model, cfg)
    prompt = random_prompts(1, sz.b1_prompt, vocab, 1)[0]

    def one() -> float:
        engine.add_request(EngineRequest(tuple(prompt), max_tokens=sz.b1_new, ignore_eos=True))
        engine.step()  # prefill + first token
        sync(device)
        t0 = time.perf_counter()
        engine.run_until_done()
        sync(device)
        return (sz.b1_new - 1) / (time.perf_counter() - t0)

    one()  # warm-up: captures the decode graphs
    tok_s = max(one(), one())
    runner = engine.runner
    graphs = getattr(runner, "graph_replays", 0)
    graph_error = getattr(runner, "graph_error", None)
    use_sdpa(model)
    ids = torch.tensor([prompt], device=device)
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
        sync(device)
        t0 = time.perf_counter()
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=sz.b1_generate_new,
            min_new_tokens=sz.b1_generate_new,
            do_sample=False,
        )
        sync(device)
    gen_tok_s = sz.b1_generate_new / (time.perf_counter() - t0)
    return {
        "engine_decode_b1_tok_s": tok_s,
        "generate_b1_tok_s": gen_tok_s,
        "graph_replays": graphs,
        "graph_error": graph_error,
    }


def bench_batch(
    model: Any,
    sz: Sizes,
    device: torch.device,
    vocab: int,
    skip_generate_batch: bool,
    opts: dict[str, Any],
) -> dict[str, Any]:
    prompts = random_prompts(sz.batch, sz.batch_prompt, vocab, 2)
    total_new = sz.batch * sz.batch_new
    out: dict[str, Any] = {}
    # transformers, padded generate (all prompts have the same length: no padding waste).
    use_sdpa(model)
    ids = torch.tensor(prompts, device=device)
    with torch.no_grad():
        sync(device)
        t0 = time.perf_counter()
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=sz.batch_new,
            min_new_tokens=sz.batch_new,
            do_sample=False,
        )
        sync(device)
    out["generate_padded_tok_s"] = total_new / (time.perf_counter() - t0)
    del ids
    free_memory()
    if not skip_generate_batch:
        try:
            from transformers import GenerationConfig

            gc_ = GenerationConfig(  # type: ignore[no-untyped-call]
                max_new_tokens=sz.batch_new, do_sample=False, eos_token_id=None, pad_token_id=0
            )
            sync(device)
            t0 = time.perf_counter()
            res = model.generate_batch(inputs=prompts, generation_config=gc_)
            sync(device)
            dt = time.perf_counter() - t0
            made = sum(len(r.generated_tokens) for r in res.values())
            out["generate_batch_tok_s"] = made / dt
            out["generate_batch_tokens"] = made
        except Exception as e:  # record, never abort the run
            out["generate_batch_error"] = repr(e)[:500]
        free_memory()
    # the engine
    bs = 16
    blocks = sz.batch * -(-(sz.batch_prompt + sz.batch_new) // bs) + 64
    cfg = EngineConfig(
        block_size=bs,
        num_blocks=blocks,
        max_num_seqs=sz.batch,
        max_batched_tokens=sz.chunk,
        max_model_len=sz.batch_prompt + sz.batch_new + 16,
        policy="none",
        graph_max_batch=max(sz.batch, 1),
        **opts,
    )
    engine = engine_for(model, cfg)
    warm = random_prompts(sz.batch, sz.batch_prompt, vocab, 3)
    for p in warm:  # warm-up with the same shapes, also captures the decode graphs
        engine.add_request(EngineRequest(tuple(p), max_tokens=sz.batch_new, ignore_eos=True))
    engine.run_until_done()
    for p in prompts:
        engine.add_request(EngineRequest(tuple(p), max_tokens=sz.batch_new, ignore_eos=True))
    sync(device)
    t0 = time.perf_counter()
    done = engine.run_until_done()
    sync(device)
    dt = time.perf_counter() - t0
    made = sum(len(o.token_ids) for o in done)
    out["engine_tok_s"] = made / dt
    out["engine_s"] = dt
    out["engine_steps"] = engine.stats.steps
    out["graph_replays"] = getattr(engine.runner, "graph_replays", 0)
    out["graph_error"] = getattr(engine.runner, "graph_error", None)
    best = max(out.get("generate_padded_tok_s", 0.0), out.get("generate_batch_tok_s", 0.0))
    out["batch64_speedup_vs_transformers"] = out["engine_tok_s"] / best if best else None
    del engine
    free_memory()
    return out


def bench_agent(
    model: Any, sz: Sizes, device: torch.device, opts: dict[str, Any]
) -> dict[str, Any]:
    programs = aw.generate(sz.workload)
    live = aw.live_context_tokens(programs)
    bs = 16
    blocks = int(sz.kv_fraction * live / bs)
    longest = max(sum(len(t.new_tokens) + t.gen_tokens for t in p.turns) for p in programs)
    blocks = max(blocks, -(-longest // bs) + 8)  # the budget always fits the longest program
    base = EngineConfig(
        block_size=bs,
        num_blocks=blocks,
        max_num_seqs=64,
        max_batched_tokens=sz.chunk,
        max_model_len=longest + 64,
        num_cpu_blocks=int(sz.cpu_tier * live / bs),
        **opts,
    )

    def make(config: EngineConfig, clock: Any, hook: Any) -> Engine:
        free_memory()
        return Engine(ModelRunner(model, config), config, clock=clock, on_forward=hook)

    results = aw.compare(programs, base, make, log=lambda m: print(m, flush=True))
    return {
        "live_context_tokens": live,
        "longest_context_tokens": longest,
        "kv_budget_tokens": blocks * bs,
        "workload": asdict(sz.workload),
        "results": {
            k: {kk: vv for kk, vv in asdict(v).items() if kk != "jct_s"} for k, v in results.items()
        },
        **aw.ratios(results),
    }


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="tiny model and sizes (CPU is fine)")
    ap.add_argument("--out", default="")
    ap.add_argument("--skip", default="", help="comma list of sections: b1,batch,agent")
    ap.add_argument("--skip-generate-batch", action="store_true")
    ap.add_argument(
        "--no-compile",
        action="store_true",
        help="CUDA graphs without torch.compile for the b1 and batch decode steps",
    )
    args = ap.parse_args(argv)
    out_path = args.out or os.path.join(os.environ.get("OUT", "."), "engine_gpu.json")
    skip = set(filter(None, args.skip.split(",")))
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sz = TINY if args.tiny else FULL
    compile_decode = device.type == "cuda" and not args.no_compile
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "machine": aw.machine(),
        "tiny": args.tiny,
        "dtype": str(dtype),
        "sizes": asdict(sz),
        "sections_s": {},
        "errors": {},
    }

    def save() -> None:
        with open(out_path, "w") as f:
            json.dump(report, f, indent=2, default=str)

    t_all = time.perf_counter()
    model = build_model(args.tiny, device, dtype)
    vocab = 900 if args.tiny else 151000
    wb = weight_bytes(model)
    bw = copy_bandwidth(device, (64 if args.tiny else 1024) * 2**20)
    report.update(weight_bytes=wb, copy_bandwidth_GBps=bw / 1e9, roofline_tok_s=bw / wb)
    save()
    # Fastest first; a mode that fails (compile, graph capture) is recorded and the next tried.
    modes = [{"compile_decode": True, "cuda_graphs": True}] if compile_decode else []
    modes += [
        {"compile_decode": False, "cuda_graphs": True},
        {"compile_decode": False, "cuda_graphs": False},
    ]
    sections: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = [
        ("b1", lambda opts: bench_b1(model, sz, device, vocab, opts)),
        (
            "batch",
            lambda opts: bench_batch(model, sz, device, vocab, args.skip_generate_batch, opts),
        ),
        ("agent", lambda opts: bench_agent(model, sz, device, opts)),
    ]
    for name, fn in sections:
        if name in skip:
            continue
        t0 = time.perf_counter()
        for i, opts in enumerate(modes if name != "agent" else modes[-2:]):
            try:
                report[name] = {**fn(opts), "engine_mode": opts}
                break
            except Exception:
                report["errors"][f"{name}[{i}]"] = traceback.format_exc()[-3000:]
                free_memory()
        report["sections_s"][name] = time.perf_counter() - t0
        print(f"[engine_gpu] {name} done in {report['sections_s'][name]:.1f}s", flush=True)
        save()
    b1, batch, agent = report.get("b1", {}), report.get("batch", {}), report.get("agent", {})
    if "engine_decode_b1_tok_s" in b1:
        frac = b1["engine_decode_b1_tok_s"] / report["roofline_tok_s"]
        report["decode_b1_roofline_fraction"] = frac
    report["batch64_speedup_vs_transformers"] = batch.get("batch64_speedup_vs_transformers")
    for key in ("jct_ttl_over_none", "jct_ttl_over_lru", "prefill_recompute_ttl_over_none"):
        report[key] = agent.get(key)
        report[key.replace("ttl", "ttl_offload")] = agent.get(key.replace("ttl", "ttl_offload"))
    report["total_s"] = time.perf_counter() - t_all
    save()
    print(
        json.dumps(
            {
                k: report.get(k)
                for k in (
                    "device",
                    "decode_b1_roofline_fraction",
                    "batch64_speedup_vs_transformers",
                    "jct_ttl_over_none",
                    "jct_ttl_over_lru",
                    "prefill_recompute_ttl_over_none",
                    "jct_ttl_offload_over_none",
                    "jct_ttl_offload_over_lru",
                    "prefill_recompute_ttl_offload_over_none",
                    "total_s",
                )
            },
            indent=2,
        )
    )
    return report


if __name__ == "__main__":
    main()
