"""Agent workload: P programs x T turns, replayed against the engine under each KV policy.

Each turn appends tool output to the program's context and generates a reply; between turns
the program waits on a tool: lognormal pauses per tool hint, fitted to the gaps
benchmarks/real_pipeline.py measured on real SWE-bench instances (results/tool_gaps.json),
times --pause-scale. Tool pauses run on a simulated clock; forward passes are real, and each
step advances the clock by its measured duration (or by an injected cost model, for
deterministic tests).

    python -m benchmarks.agent_workload --out benchmarks/results/agent_workload_cpu.json
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.llm.engine.clock import ManualClock
from harness.llm.engine.config import EngineConfig, Policy
from harness.llm.engine.engine import Engine, ForwardHook
from harness.llm.engine.plan import SchedulerOutput
from harness.llm.engine.sequence import EngineRequest

# Tool pause models (seconds): lognormal(median, sigma) per tool hint, with how often the
# tool follows a turn. Measured: benchmarks/real_pipeline.py records the gap between each
# model reply and the program's next request on real SWE-bench instances and writes
# results/tool_gaps.json; these are fitted from it. The made-up table of earlier versions
# stays only as the fallback for a checkout without that file.
GAPS_JSON = Path(__file__).resolve().parent / "results" / "tool_gaps.json"
FALLBACK_TOOLS: dict[str, tuple[float, float]] = {
    "edit": (1.0, 0.5),
    "search": (2.0, 0.7),
    "run_test": (8.0, 0.9),
}


def load_tools(
    path: Path = GAPS_JSON,
) -> tuple[dict[str, tuple[float, float]], dict[str, int], str]:
    """(tool -> (median s, sigma), tool -> observations, source) from a tool_gaps.json."""
    try:
        data = json.loads(path.read_text())
        tools = {
            name: (float(t["median_s"]), float(t["lognormal_sigma"]))
            for name, t in data["tools"].items()
            if t.get("n")
        }
        weights = {name: int(t["n"]) for name, t in data["tools"].items() if t.get("n")}
    except (OSError, ValueError, KeyError, TypeError):
        tools = {}
    if not tools:
        return dict(FALLBACK_TOOLS), dict.fromkeys(FALLBACK_TOOLS, 1), "made up (no tool_gaps.json)"
    return tools, weights, f"measured: {path.name} ({sum(weights.values())} gaps)"


TOOLS, TOOL_WEIGHTS, TOOLS_SOURCE = load_tools()


@dataclass(frozen=True)
class WorkloadSpec:
    programs: int = 16
    turns: int = 6
    system_tokens: int = 2000  # issue + repository context of the first turn
    tool_tokens: tuple[int, int] = (200, 2000)  # appended per turn (log-uniform)
    gen_tokens: tuple[int, int] = (100, 400)
    arrival_window_s: float = 0.0  # programs arrive uniformly over this window
    pause_scale: float = 1.0  # multiplies every tool pause
    vocab: int = 1000
    seed: int = 0
    # (tool, median s, sigma, weight) per tool hint; empty = the measured ones (TOOLS)
    tools: tuple[tuple[str, float, float, int], ...] = ()


@dataclass(frozen=True)
class Turn:
    new_tokens: tuple[int, ...]  # appended to the context before this turn
    gen_tokens: int
    tool: str | None  # the tool that follows (None on the last turn)
    pause_s: float  # its duration


@dataclass(frozen=True)
class Program:
    program_id: str
    arrival_s: float
    turns: tuple[Turn, ...]


def generate(spec: WorkloadSpec) -> list[Program]:
    rng = random.Random(spec.seed)

    def tokens(n: int) -> tuple[int, ...]:
        return tuple(rng.randrange(4, spec.vocab) for _ in range(n))

    def loguniform(lo: int, hi: int) -> int:
        return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    table = spec.tools or tuple((n, m, sd, TOOL_WEIGHTS.get(n, 1)) for n, (m, sd) in TOOLS.items())
    model = {name: (median, sigma) for name, median, sigma, _ in table}
    names = [name for name, *_ in table]
    weights = [weight for *_, weight in table]
    programs = []
    for p in range(spec.programs):
        turns = []
        for t in range(spec.turns):
            new = spec.system_tokens if t == 0 else loguniform(*spec.tool_tokens)
            last = t == spec.turns - 1
            if last:
                tool = None
            elif len(set(weights)) == 1:  # equal weights: the draw earlier versions made
                tool = rng.choice(names)
            else:
                tool = rng.choices(names, weights)[0]
            pause = 0.0
            if tool is not None:
                median, sigma = model[tool]
                pause = spec.pause_scale * median * math.exp(rng.gauss(0.0, sigma))
            gen = rng.randint(*spec.gen_tokens)
            turns.append(Turn(tokens(new), gen, tool, pause))
        arrival = rng.uniform(0.0, spec.arrival_window_s) if spec.arrival_window_s else 0.0
        programs.append(Program(f"p{p}", arrival, tuple(turns)))
    return programs


@dataclass
class ReplayResult:
    policy: str
    mean_jct_s: float
    p90_jct_s: float
    makespan_s: float
    throughput_tok_s: float  # generated tokens / makespan
    generated_tokens: int
    prefill_tokens: int
    prefill_recomputed: int
    cached_tokens: int
    pin_hit_rate: float
    pins_created: int
    pins_expired: int
    pins_evicted: int
    preemptions: int
    forward_s: float  # wall time inside forward passes
    steps: int
    jct_s: list[float] = field(default_factory=list)


EngineFactory = Callable[[EngineConfig, ManualClock, ForwardHook], Engine]
StepCost = Callable[[SchedulerOutput, float], float]  # (step, measured s) -> simulated s


def linear_cost(base_s: float, per_token_s: float) -> StepCost:
    """A deterministic step cost: fixed overhead plus a price per scheduled token."""
    return lambda out, _dt: base_s + per_token_s * out.num_tokens


def replay(
    programs: Sequence[Program],
    config: EngineConfig,
    make_engine: EngineFactory,
    *,
    step_cost: StepCost | None = None,
) -> ReplayResult:
    clock = ManualClock()

    def on_forward(out: SchedulerOutput, dt: float) -> None:
        clock.advance(step_cost(out, dt) if step_cost is not None else dt)

    engine = make_engine(config, clock, on_forward)
    events: list[tuple[float, int, int]] = [(p.arrival_s, i, 0) for i, p in enumerate(programs)]
    heapq.heapify(events)
    contexts: list[list[int]] = [[] for _ in programs]
    owner: dict[int, tuple[int, int]] = {}
    done_at: dict[int, float] = {}
    generated = 0
    while events or engine.has_unfinished():
        while events and events[0][0] <= clock.now():
            _, i, t = heapq.heappop(events)
            prog, turn = programs[i], programs[i].turns[t]
            contexts[i] += turn.new_tokens
            rid = engine.add_request(
                EngineRequest(
                    tuple(contexts[i]),
                    max_tokens=turn.gen_tokens,
                    ignore_eos=True,
                    program_id=prog.program_id,
                    last_turn=t == len(prog.turns) - 1,
                    next_tool=turn.tool,
                )
            )
            owner[rid] = (i, t)
        if not engine.has_unfinished():
            clock.set(events[0][0])
            continue
        steps = engine.stats.steps
        for out in engine.step():
            i, t = owner.pop(out.request_id)
            contexts[i] += out.token_ids
            generated += len(out.token_ids)
            turn = programs[i].turns[t]
            if t + 1 < len(programs[i].turns):
                heapq.heappush(events, (clock.now() + turn.pause_s, i, t + 1))
            else:
                done_at[i] = clock.now()
        if engine.stats.steps == steps:  # nothing could run (cannot happen; never spin)
            clock.advance(0.01)
    jct = [done_at[i] - p.arrival_s for i, p in enumerate(programs)]
    s = engine.scheduler_stats
    makespan = max(done_at.values()) - min(p.arrival_s for p in programs)
    return ReplayResult(
        policy=config.policy,
        mean_jct_s=statistics.fmean(jct),
        p90_jct_s=sorted(jct)[max(0, math.ceil(0.9 * len(jct)) - 1)],
        makespan_s=makespan,
        throughput_tok_s=generated / makespan if makespan > 0 else 0.0,
        generated_tokens=generated,
        prefill_tokens=s.prefill_tokens,
        prefill_recomputed=s.recomputed_tokens,
        cached_tokens=s.cached_tokens,
        pin_hit_rate=s.pin_hit_rate,
        pins_created=s.pins_created,
        pins_expired=s.pins_expired,
        pins_evicted=s.pins_evicted,
        preemptions=s.preemptions,
        forward_s=engine.stats.forward_s,
        steps=engine.stats.steps,
        jct_s=jct,
    )


# Compared variants: (KV policy, CPU offload tier on). `ttl` is Continuum's pins alone;
# `ttl+offload` also copies dropped pins to the CPU tier instead of losing them.
VARIANTS: dict[str, tuple[Policy, bool]] = {
    "none": ("none", False),
    "lru": ("lru", False),
    "ttl": ("ttl", False),
    "ttl+offload": ("ttl", True),
}


def variant_config(base: EngineConfig, name: str) -> EngineConfig:
    policy, offload = VARIANTS[name]
    return replace(base, policy=policy, num_cpu_blocks=base.num_cpu_blocks if offload else 0)


def compare(
    programs: Sequence[Program],
    base: EngineConfig,
    make_engine: EngineFactory,
    *,
    variants: Sequence[str] = tuple(VARIANTS),
    step_cost: StepCost | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, ReplayResult]:
    """Replay the same programs under each variant; `base.num_cpu_blocks` sizes the CPU tier."""
    out: dict[str, ReplayResult] = {}
    for name in variants:
        t0 = time.perf_counter()
        out[name] = replay(programs, variant_config(base, name), make_engine, step_cost=step_cost)
        if log is not None:
            log(f"[agent_workload] {name}: {time.perf_counter() - t0:.1f}s wall")
    return out


def ratios(results: dict[str, ReplayResult]) -> dict[str, float]:
    """The target figures, for `ttl` and (suffixed `_offload`) for `ttl+offload`."""
    none, lru = results["none"], results["lru"]
    out: dict[str, float] = {}
    for name, suffix in (("ttl", ""), ("ttl+offload", "_offload")):
        if name not in results:
            continue
        ttl = results[name]
        out[f"jct_ttl{suffix}_over_none"] = ttl.mean_jct_s / none.mean_jct_s
        out[f"jct_ttl{suffix}_over_lru"] = ttl.mean_jct_s / lru.mean_jct_s
        rec = none.prefill_recomputed
        out[f"prefill_recompute_ttl{suffix}_over_none"] = (
            ttl.prefill_recomputed / rec if rec else 0.0
        )
    return out


def live_context_tokens(programs: Sequence[Program]) -> int:
    """Tokens of every program's final context: what a cache holding all of them would need."""
    return sum(sum(len(t.new_tokens) + t.gen_tokens for t in p.turns) for p in programs)


def transformers_engine_factory(model: Any) -> EngineFactory:
    from harness.llm.engine.runner import ModelRunner

    def make(config: EngineConfig, clock: ManualClock, hook: ForwardHook) -> Engine:
        return Engine(ModelRunner(model, config), config, clock=clock, on_forward=hook)

    return make


CPU_MODELS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2),
    "small": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4),
}


def cpu_model(vocab: int, size: str = "tiny") -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=vocab,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=65536,
        **CPU_MODELS[size],
    )
    model: Any = Qwen2ForCausalLM(cfg)
    return model.eval()


def machine() -> dict[str, Any]:
    import os

    import torch
    import transformers

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "load_average_1_5_15": os.getloadavg(),  # a shared machine times noisily
        "git_commit": _git_commit(),
    }


def _git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return ""
    return out.stdout.strip()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", choices=sorted(CPU_MODELS), default="tiny")
    ap.add_argument("--programs", type=int, default=12)
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--system-tokens", type=int, default=1500)
    ap.add_argument("--tool-min", type=int, default=200)
    ap.add_argument("--tool-max", type=int, default=1500)
    ap.add_argument("--gen-min", type=int, default=50)
    ap.add_argument("--gen-max", type=int, default=150)
    ap.add_argument("--pause-scale", type=float, default=0.3)
    ap.add_argument(
        "--kv-fraction",
        type=float,
        default=0.25,
        help="device KV budget as a fraction of all programs' final contexts",
    )
    ap.add_argument(
        "--cpu-tier",
        type=float,
        default=1.0,
        help="CPU offload tier for ttl, same unit; 0 turns offload off",
    )
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--max-batched-tokens", type=int, default=2048)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    spec = WorkloadSpec(
        programs=args.programs,
        turns=args.turns,
        system_tokens=args.system_tokens,
        tool_tokens=(args.tool_min, args.tool_max),
        gen_tokens=(args.gen_min, args.gen_max),
        pause_scale=args.pause_scale,
        vocab=1000,
        seed=args.seed,
    )
    programs = generate(spec)
    live = live_context_tokens(programs)
    blocks = int(args.kv_fraction * live / args.block_size)
    longest = max(sum(len(t.new_tokens) + t.gen_tokens for t in p.turns) for p in programs)
    blocks = max(blocks, -(-longest // args.block_size) + 8)
    base = EngineConfig(
        block_size=args.block_size,
        num_blocks=blocks,
        max_num_seqs=64,
        max_batched_tokens=args.max_batched_tokens,
        max_model_len=65536,
        num_cpu_blocks=int(args.cpu_tier * live / args.block_size),
    )
    model = cpu_model(spec.vocab, args.model)
    make = transformers_engine_factory(model)
    t0 = time.perf_counter()
    results = compare(
        programs,
        base,
        make,
        variants=args.variants.split(","),
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    n_params = sum(p.numel() for p in model.parameters())
    report = {
        "machine": machine(),
        "model": f"Qwen2 random init ({args.model}: {CPU_MODELS[args.model]}, 4 heads / 2 KV "
        f"heads, vocab 1000, {n_params} params), float32",
        "workload": asdict(spec),
        "tool_pauses": {"source": TOOLS_SOURCE, "median_s_sigma": TOOLS, "weights": TOOL_WEIGHTS},
        "live_context_tokens": live,
        "max_context_tokens": max(
            sum(len(t.new_tokens) + t.gen_tokens for t in p.turns) for p in programs
        ),
        "kv_budget_tokens": blocks * args.block_size,
        "cpu_tier_tokens": base.num_cpu_blocks * args.block_size,
        "clock": "tool pauses simulated; each step advances the clock by its measured wall time",
        "results": {
            k: {kk: vv for kk, vv in asdict(v).items() if kk != "jct_s"} for k, v in results.items()
        },
        "ratios": ratios(results) if {"none", "lru"} <= set(results) else {},
        "wall_s": time.perf_counter() - t0,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
