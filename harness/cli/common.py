"""Helpers shared by CLI command groups: environment lookups and running coroutines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


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
