"""Host overhead of one engine step: everything but the model's forward pass.

A tiny random-init Qwen2 (1 layer, hidden 64, vocab 1024) keeps the forward small; forward
hooks time it, and the host overhead of a step is its time minus the forward's. Times are the
engine thread's CPU time (torch runs single-threaded here), which other work on a shared
machine inflates far less than wall time; the wall-clock figures are reported beside them. Batch 1
and batch 64, greedy and sampled (temperature 0.7, seeded), decode steps only (the prompts
are prefilled before timing), every request with a stop string, as `harness serve` sends.

    python -m benchmarks.engine_host            # ~20 s; prints JSON
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

VOCAB = 1024
PROMPT = 1024  # tokens: agent turns carry long prompts (block tables of 64 blocks)
STOPS = ("\n\nUser:", "</answer>")


def tiny_model(vocab: int = VOCAB) -> Any:
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
    )
    model = Qwen2ForCausalLM(cfg).eval()
    model.generation_config = GenerationConfig(eos_token_id=None, pad_token_id=0)  # type: ignore[no-untyped-call]
    return model


class ForwardTimer:
    """Accumulates the wall and CPU time spent inside `model.forward` (pre/post hooks)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.wall = self.cpu = 0.0
        self._t0 = self._c0 = 0.0
        model.register_forward_pre_hook(self._pre)
        model.register_forward_hook(self._post)

    def _pre(self, *_: Any) -> None:
        self._t0, self._c0 = time.perf_counter(), time.thread_time()

    def _post(self, *_: Any) -> None:
        self.wall += time.perf_counter() - self._t0
        self.cpu += time.thread_time() - self._c0


def _stop_fn() -> Any:
    """A stop-string check as the client builds it, over a toy byte decoding."""
    from harness.llm.engine import client

    class Bytes:
        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            return bytes(i % 128 for i in ids).decode("ascii")

    return client.make_stop_fn(Bytes(), STOPS)


def measure(
    batch: int, *, steps: int = 60, sampled: bool = False, lookup: bool = False
) -> dict[str, Any]:
    from harness.llm.engine.config import EngineConfig
    from harness.llm.engine.engine import Engine
    from harness.llm.engine.runner import ModelRunner
    from harness.llm.engine.sequence import EngineRequest, SamplingParams

    torch.set_num_threads(1)
    model = tiny_model()
    timer = ForwardTimer(model)
    cfg = EngineConfig(
        num_blocks=max(256, batch * ((PROMPT + 10 * steps + 40) // 16 + 4)),
        max_num_seqs=max(batch, 1),
        max_batched_tokens=max(2048, batch * PROMPT),
        policy="ttl",
        max_model_len=8192,
    )
    if lookup:  # the default in-process engine: lookup (suffix) drafts
        from harness.llm.engine.config import SpecConfig
        from harness.llm.engine.load import LOOKUP_COST_RATIO, LOOKUP_SPECULATE
        from harness.llm.engine.speculative import speculative_runner

        spec = SpecConfig(k=LOOKUP_SPECULATE, cost_ratio=LOOKUP_COST_RATIO)
        runner = speculative_runner(model, cfg, spec, lookup=True)
        engine = Engine(runner, cfg, adapt_prefill_rate=False, draft_len=runner.policy.draft_len)
    else:
        engine = Engine(ModelRunner(model, cfg), cfg, adapt_prefill_rate=False)
    stop = _stop_fn()
    g = torch.Generator().manual_seed(1)
    for i in range(batch):
        prompt = tuple(int(t) for t in torch.randint(1, VOCAB, (PROMPT,), generator=g))
        params = SamplingParams(0.7, 1.0, seed=i) if sampled else SamplingParams()
        engine.add_request(
            EngineRequest(
                prompt,
                max_tokens=10 * steps + 40,  # lookup steps make several tokens
                sampling=params,
                stop_fn=stop,
                program_id=f"p{i}",
                ignore_eos=True,
            )
        )
    for _ in range(4):  # prefill and warm-up
        engine.step()
    walls: list[float] = []
    hosts: list[float] = []
    cpu_hosts: list[float] = []
    before = sum(len(s.token_ids) - s.prompt_len for s in engine.scheduler.running)
    for _ in range(steps):
        f0, c0 = timer.wall, timer.cpu
        t0, tc = time.perf_counter(), time.thread_time()
        engine.step()
        wall, cpu = time.perf_counter() - t0, time.thread_time() - tc
        walls.append(wall)
        hosts.append(wall - (timer.wall - f0))
        cpu_hosts.append(cpu - (timer.cpu - c0))
    med = statistics.median
    made = sum(len(s.token_ids) - s.prompt_len for s in engine.scheduler.running) - before
    return {
        "tokens_per_step": round(made / steps, 2),
        "batch": batch,
        "sampled": sampled,
        "lookup": lookup,
        "host_ms": round(1000 * med(cpu_hosts), 4),
        "host_wall_ms": round(1000 * med(hosts), 4),
        "step_wall_ms": round(1000 * med(walls), 4),
    }


def run_all(steps: int = 60, plain_only: bool = False) -> dict[str, Any]:
    """Plain and lookup-drafting (the default) engines, greedy and sampled, batch 1 and 64.
    The headline figure at each batch size is the worse of greedy and sampled plain steps
    (one token per row); lookup steps, which verify several tokens per row, are reported
    beside them with the tokens each step produced."""
    out: dict[str, Any] = {
        "model": f"Qwen2 random init, 1 layer, hidden 64, vocab {VOCAB}",
        "prompt_tokens": PROMPT,
        "unit": "engine-thread CPU ms per step, forward excluded (median)",
    }
    for batch in (1, 64):
        for lookup in (False,) if plain_only else (False, True):
            worst = 0.0
            for sampled in (False, True):
                kind = "lookup" if lookup else "plain"
                key = f"b{batch}_{kind}_{'sampled' if sampled else 'greedy'}"
                out[key] = measure(batch, steps=steps, sampled=sampled, lookup=lookup)
                worst = max(worst, out[key]["host_ms"])
            prefix = "lookup_" if lookup else ""
            out[f"{prefix}host_ms_per_step_b{batch}"] = worst
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument(
        "--plain-only", action="store_true", help="no lookup drafts (e.g. an older engine)"
    )
    args = ap.parse_args(argv)
    out = run_all(args.steps, args.plain_only)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
