"""Helpers shared by CLI command groups: the config of a command (file, environment, flags),
environment lookups (cache, CA bundle, GitHub), running coroutines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from harness.config import Config, SolveConfig

T = TypeVar("T")

# The host's CA bundle (Debian/Ubuntu): trusted by image builds unless another is named.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def environment(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Config values from environment variables (config key -> value): below the --config
    file, -c and the flags. Empty variables count as unset."""
    values = {
        "base_url": environ.get("OPENAI_BASE_URL"),
        "eval.git_mirror": environ.get("HARNESS_GIT_MIRROR"),
        "eval.ca_bundle": environ.get("HARNESS_CA_BUNDLE"),
    }
    return {key: value for key, value in values.items() if value}


def load_config(
    config_file: Path | None,
    overrides: list[str],
    flags: Mapping[str, Any] | None = None,
    base: SolveConfig | None = None,
) -> Config:
    """The config of one command: defaults < environment < (a resumed run's own config) <
    --config file < -c < flags, checked once. A resumed run keeps its config, so the
    environment does not reach it."""
    from harness.config import load

    env = environment() if base is None else None
    return load(config_file, overrides, flags=flags, environment=env, base=base)


def ca_bundle(chosen: Path | None) -> Path | None:
    """The CA bundle image builds trust: the one configured (eval.ca_bundle, --ca-bundle,
    $HARNESS_CA_BUNDLE), else the host's when it has one."""
    if chosen is not None:
        return chosen
    return HOST_CA if HOST_CA.is_file() else None


def github_urls(server_url: str | None = None) -> tuple[str, str]:
    """(web, API) base URLs of GitHub: `server_url` (an issue URL's host), else
    $GITHUB_SERVER_URL, else github.com; the API from $GITHUB_API_URL, else github.com's or,
    for GitHub Enterprise, /api/v3 of the server."""
    env = os.environ
    server = (server_url or env.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/")
    default_api = "https://api.github.com" if server == "https://github.com" else f"{server}/api/v3"
    return server, env.get("GITHUB_API_URL") or default_api


def local_backend_warning(backend: str) -> None:
    """The local backend runs model-written code unisolated: say so wherever it is chosen."""
    if backend == "local":
        from harness.cli.options import warn
        from harness.sandboxes.local import WARNING

        warn(WARNING)


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
