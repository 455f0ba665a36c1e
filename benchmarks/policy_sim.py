"""Policy simulation: the real scheduler and block manager, no model, a GPU step-cost model.

For tuning the KV policies at GPU scale on a CPU in seconds. It is NOT a measurement: tokens
are placeholders and step times come from `gpu_cost` (H200-like guesses for Qwen2.5-1.5B:
6 ms per step, 25 us per prefill token, 21 ns per context token a decode reads, CPU-tier
copies at 25 GB/s). The numbers it prints are predictions to check against engine_gpu.py.

    python -m benchmarks.policy_sim --programs 16 --turns 6
"""

from __future__ import annotations

import argparse
import heapq
import statistics
from collections.abc import Sequence

from benchmarks import agent_workload as aw
from harness.llm.engine.config import EngineConfig
from harness.llm.engine.plan import SchedulerOutput
from harness.llm.engine.scheduler import Scheduler
from harness.llm.engine.sequence import EngineRequest

KV_BYTES_PER_TOKEN = 28 * 1024  # Qwen2.5-1.5B in bf16: 28 layers x 2 x 2 KV heads x 128 x 2


def gpu_cost(out: SchedulerOutput, block_size: int = 16) -> float:
    prefill = sum(it.num_tokens for it in out.items if it.num_tokens > 1)
    context = sum(it.start + 1 for it in out.items if it.num_tokens == 1)
    copies = len(out.copy_ops) * block_size * KV_BYTES_PER_TOKEN / 25e9
    return 0.006 + 25e-6 * prefill + 21e-9 * context + copies


def simulate(programs: Sequence[aw.Program], config: EngineConfig) -> dict[str, float]:
    s = Scheduler(config)
    now, busy, rid = 0.0, 0.0, 0
    events = [(p.arrival_s, i, 0) for i, p in enumerate(programs)]
    heapq.heapify(events)
    ctx: list[list[int]] = [[] for _ in programs]
    owner: dict[int, tuple[int, int]] = {}
    done: dict[int, float] = {}
    while events or s.has_unfinished():
        while events and events[0][0] <= now:
            _, i, t = heapq.heappop(events)
            turn = programs[i].turns[t]
            ctx[i] += turn.new_tokens
            s.add(
                rid,
                EngineRequest(
                    tuple(ctx[i]),
                    max_tokens=turn.gen_tokens,
                    ignore_eos=True,
                    program_id=programs[i].program_id,
                    last_turn=t == len(programs[i].turns) - 1,
                    next_tool=turn.tool,
                ),
                now,
            )
            owner[rid] = (i, t)
            rid += 1
        if not s.has_unfinished():
            now = events[0][0]
            continue
        out = s.schedule(now)
        cost = gpu_cost(out, config.block_size) if out.items else 0.01
        now, busy = now + cost, busy + cost
        prefill = sum(it.num_tokens for it in out.items if it.num_tokens > 1)
        if prefill > out.num_tokens // 2:
            s.ttl.observe_prefill(prefill, cost)
        for seq in s.postprocess(out, [7 if it.sample else None for it in out.items], now):
            i, t = owner.pop(seq.seq_id)
            ctx[i] += seq.generated
            if t + 1 < len(programs[i].turns):
                heapq.heappush(events, (now + programs[i].turns[t].pause_s, i, t + 1))
            else:
                done[i] = now
    jct = [done[i] - p.arrival_s for i, p in enumerate(programs)]
    st = s.stats
    return {
        "mean_jct_s": statistics.fmean(jct),
        "busy_s": busy,
        "prefill_tokens": st.prefill_tokens,
        "prefill_recomputed": st.recomputed_tokens,
        "pin_hit_rate": st.pin_hit_rate,
        "pins_evicted": st.pins_evicted,
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--programs", type=int, default=16)
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--system-tokens", type=int, default=6000)
    ap.add_argument("--tool-max", type=int, default=4000)
    ap.add_argument("--pause-scale", type=float, default=0.3)
    ap.add_argument("--kv-fraction", type=float, default=0.25)
    args = ap.parse_args(argv)
    spec = aw.WorkloadSpec(
        programs=args.programs,
        turns=args.turns,
        system_tokens=args.system_tokens,
        tool_tokens=(500, args.tool_max),
        gen_tokens=(100, 400),
        pause_scale=args.pause_scale,
        vocab=151000,
    )
    programs = aw.generate(spec)
    live = aw.live_context_tokens(programs)
    base = EngineConfig(
        num_blocks=int(args.kv_fraction * live / 16),
        max_num_seqs=64,
        max_batched_tokens=8192,
        max_model_len=1 << 20,
        num_cpu_blocks=live // 16,
        prefill_tok_per_s=40000.0,
    )
    res = {name: simulate(programs, aw.variant_config(base, name)) for name in aw.VARIANTS}
    for name, r in res.items():
        print(f"{name:12s}", {k: round(v, 3) for k, v in r.items()})
    none = res["none"]
    for name in ("ttl", "ttl+offload"):
        r = res[name]
        print(
            f"{name}: jct/none {r['mean_jct_s'] / none['mean_jct_s']:.2f}  "
            f"jct/lru {r['mean_jct_s'] / res['lru']['mean_jct_s']:.2f}  "
            f"recompute/none {r['prefill_recomputed'] / none['prefill_recomputed']:.3f}"
        )


if __name__ == "__main__":
    main()
