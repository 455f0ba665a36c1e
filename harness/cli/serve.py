"""`harness serve`: an OpenAI-compatible server over any model spec (in-process by default)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer
from rich.console import Console

from harness.cli.common import load_config
from harness.cli.model import store_from_env
from harness.cli.options import (
    base_url_option,
    config_option,
    conformal_alpha_option,
    draft_model_option,
    set_option,
    speculate_option,
)
from harness.config import Config
from harness.llm.specs import make_llm, spec_forms


def serve(
    config_file: Path | None = config_option(),
    overrides: list[str] = set_option(),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        metavar="SPEC",
        help=f"Model spec (default: smollm2-135m); {spec_forms()}.",
    ),
    base_url: str | None = base_url_option(),
    host: str | None = typer.Option(
        None, "--host", help="Address to listen on (default 127.0.0.1)."
    ),
    port: int | None = typer.Option(
        None, "--port", help="Port (default 8000); 0 picks a free one."
    ),
    device: str | None = typer.Option(
        None, "--device", help="cpu, cuda, cuda:1 ... (default: GPU if any)."
    ),
    engine: bool | None = typer.Option(
        None, "--engine/--no-engine", help="Continuous batching with KV pins (default on)."
    ),
    kv_policy: str | None = typer.Option(
        None, "--kv-policy", help="Engine KV policy: none, lru or ttl (the default)."
    ),
    kv_memory_gb: float | None = typer.Option(
        None, "--kv-memory-gb", help="KV cache size (default: auto)."
    ),
    cpu_offload_gb: float | None = typer.Option(
        None, "--cpu-offload-gb", help="Host memory for offloaded KV pins (default 0)."
    ),
    draft_model: str | None = draft_model_option(),
    speculate: int | None = speculate_option(),
    conformal_alpha: float | None = conformal_alpha_option(),
    served_model_name: list[str] | None = typer.Option(
        None,
        "--served-model-name",
        metavar="NAME",
        help="A name clients may send as 'model' (repeatable; default: the model's name). "
        "Other names get 404 model_not_found, as OpenAI answers.",
    ),
) -> None:
    """Serve a model at /v1/chat/completions (streaming too), /v1/models and /health.

    In-process models run on the engine: requests from many clients share each forward pass,
    and a request's `program_id` / `last_turn` / `next_tool` fields keep that program's KV
    cache pinned across its tool calls. --draft-model / --speculate / --conformal-alpha turn
    on draft/target decoding (docs/engine.md). The --config file's `model:`, `engine:` and
    `serve:` settings apply; the flags override them.
    """
    flags = {
        "model": model,
        "base_url": base_url,
        "serve.host": host,
        "serve.port": port,
        "serve.device": device,
        "serve.served_model_names": tuple(served_model_name) if served_model_name else None,
        "engine.enabled": engine,
        "engine.policy": kv_policy,
        "engine.kv_memory_gb": kv_memory_gb,
        "engine.cpu_offload_gb": cpu_offload_gb,
        "engine.draft_model": draft_model,
        "engine.speculate": speculate,
        "engine.conformal_alpha": conformal_alpha,
    }
    asyncio.run(_serve(load_config(config_file, overrides, flags)))


async def _serve(cfg: Config) -> None:
    from harness.llm.server import serving  # uvicorn and starlette load only here

    settings = cfg.serve
    llm = await make_llm(
        cfg.solve.model,
        store=store_from_env(),
        fetch_missing=True,
        api_key=os.environ.get("OPENAI_API_KEY"),
        base_url=cfg.solve.base_url,
        device=settings.device,
        engine=cfg.solve.engine,
    )
    names = settings.served_model_names
    try:
        async with serving(
            llm, host=settings.host, port=settings.port, log_level="info", model_names=names
        ) as base_url:
            shown = ", ".join(names or (llm.model_name,))
            Console().print(f"serving {shown} at {base_url}", highlight=False, soft_wrap=True)
            await asyncio.Event().wait()  # until Ctrl-C / SIGTERM stops the server
    finally:
        await llm.aclose()
