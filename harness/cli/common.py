"""Helpers shared by CLI command groups: environment lookups, running coroutines, and the
speculative-decoding flags that `solve`, `eval` and `serve` share."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import typer

T = TypeVar("T")

DRAFT_MODEL_HELP = (
    "Drafter for speculative decoding of in-process models: suffix (the default: drafts "
    "copied from earlier text of the prompt, the output and the program's earlier turns; "
    "no model), a model spec sharing the target's tokenizer, self / self:L (the target's "
    "first L layers; default a quarter), or none."
)
SPECULATE_HELP = (
    "Token-level speculative decoding: up to K draft tokens per round, verified by the target "
    "in one pass (exact: greedy output unchanged, sampled output distributed as the "
    "target's); 0 turns it off."
)
CONFORMAL_ALPHA_HELP = (
    "Step-level speculation (ATTS): the draft writes each step, the target scores it and "
    "rewrites the worst ~A of them (split-conformal threshold; A in (0, 1])."
)


def draft_model_option() -> Any:
    return typer.Option(None, "--draft-model", help=DRAFT_MODEL_HELP)


def speculate_option() -> Any:
    return typer.Option(None, "--speculate", min=0, help=SPECULATE_HELP)


def conformal_alpha_option() -> Any:
    return typer.Option(None, "--conformal-alpha", help=CONFORMAL_ALPHA_HELP)


def speculation_overrides(
    draft_model: str | None, speculate: int | None, conformal_alpha: float | None
) -> list[str]:
    """`engine.*` config overrides for the speculation flags (only those given)."""
    out: list[str] = []
    if draft_model is not None:
        out.append(f"engine.draft_model={json.dumps(draft_model)}")  # quoted: YAML string
    if speculate is not None:
        out.append(f"engine.speculate={speculate}")
    if conformal_alpha is not None:
        out.append(f"engine.conformal_alpha={conformal_alpha}")
    return out


def cache_dir() -> Path:
    """`$HARNESS_CACHE_DIR`, else `$XDG_CACHE_HOME/harness`, else `~/.cache/harness`."""
    from harness.llm.model_store import default_cache_dir

    return default_cache_dir(os.environ, Path.home())


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro`; SIGTERM cancels it like Ctrl-C does, so `async with` cleanup runs."""
    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        task = loop.create_task(coro)
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return runner.run(_await(task))
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGTERM)


async def _await(task: asyncio.Task[T]) -> T:
    return await task
