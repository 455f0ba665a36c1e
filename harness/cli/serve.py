"""`harness serve`: an OpenAI-compatible server over any model spec (in-process by default)."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer
from rich.console import Console

from harness.cli.common import CONFORMAL_ALPHA_HELP, DRAFT_MODEL_HELP, SPECULATE_HELP
from harness.cli.model import store_from_env
from harness.errors import ConfigError
from harness.llm.engine.load import EngineSettings
from harness.llm.model_store import DEFAULT_MODEL
from harness.llm.specs import make_llm, spec_forms


def serve(
    model: Annotated[
        str, typer.Option("--model", "-m", help=f"Model spec; {spec_forms()}.")
    ] = DEFAULT_MODEL,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port; 0 picks a free one.")] = 8000,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: GPU if any).")
    ] = None,
    engine: Annotated[
        bool, typer.Option("--engine/--no-engine", help="Continuous batching with KV pins.")
    ] = True,
    kv_policy: Annotated[
        str, typer.Option("--kv-policy", help="Engine KV policy: none, lru or ttl.")
    ] = "ttl",
    kv_memory_gb: Annotated[
        float | None, typer.Option("--kv-memory-gb", help="KV cache size (default: auto).")
    ] = None,
    cpu_offload_gb: Annotated[
        float, typer.Option("--cpu-offload-gb", help="Host memory for offloaded KV pins.")
    ] = 0.0,
    draft_model: Annotated[str | None, typer.Option("--draft-model", help=DRAFT_MODEL_HELP)] = None,
    speculate: Annotated[
        int | None, typer.Option("--speculate", min=0, help=SPECULATE_HELP)
    ] = None,
    conformal_alpha: Annotated[
        float | None, typer.Option("--conformal-alpha", help=CONFORMAL_ALPHA_HELP)
    ] = None,
    served_model_name: Annotated[
        list[str] | None,
        typer.Option(
            "--served-model-name",
            help="A name clients may send as 'model' (repeatable; default: the model's name). "
            "Other names get 404 model_not_found, as OpenAI answers.",
        ),
    ] = None,
) -> None:
    """Serve a model at /v1/chat/completions (streaming too), /v1/models and /health.

    In-process models run on the engine: requests from many clients share each forward pass,
    and a request's `program_id` / `last_turn` / `next_tool` fields keep that program's KV
    cache pinned across its tool calls. --draft-model / --speculate / --conformal-alpha turn
    on draft/target decoding (docs/engine.md).
    """
    settings = EngineSettings(
        enabled=engine,
        policy=kv_policy,
        kv_memory_gb=kv_memory_gb,
        cpu_offload_gb=cpu_offload_gb,
        draft_model=draft_model,
        speculate=speculate,
        conformal_alpha=conformal_alpha,
    )
    names = tuple(served_model_name or ())
    if any(not name.strip() for name in names):
        raise ConfigError(
            "--served-model-name must not be empty", hint="e.g. --served-model-name gpt-4o"
        )
    asyncio.run(_serve(model, host, port, device, settings, names))


async def _serve(
    model: str,
    host: str,
    port: int,
    device: str | None,
    settings: EngineSettings,
    names: tuple[str, ...],
) -> None:
    from harness.llm.server import serving  # uvicorn and starlette load only here

    llm = await make_llm(
        model,
        store=store_from_env(),
        fetch_missing=True,
        api_key=os.environ.get("OPENAI_API_KEY"),
        base_url=os.environ.get("OPENAI_BASE_URL"),
        device=device,
        engine=settings,
    )
    try:
        async with serving(
            llm, host=host, port=port, log_level="info", model_names=names
        ) as base_url:
            shown = ", ".join(names or (llm.model_name,))
            Console().print(f"serving {shown} at {base_url}", highlight=False, soft_wrap=True)
            await asyncio.Event().wait()  # until Ctrl-C / SIGTERM stops the server
    finally:
        await llm.aclose()
