"""Sandboxes: isolated work trees that run commands (docker, bwrap, local backends)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from harness.errors import ConfigError
from harness.sandboxes.base import Limits, Sandbox, SandboxBackend, SandboxSpec

BackendName = Literal["docker", "bwrap", "local"]
BACKENDS: tuple[str, ...] = ("docker", "bwrap", "local")

__all__ = ["BACKENDS", "Limits", "Sandbox", "SandboxBackend", "SandboxSpec", "make_backend"]


def make_backend(name: str, cache_dir: Path, *, docker_image: str | None = None) -> SandboxBackend:
    """Build a backend by name. Raises SandboxUnavailable when it cannot run here."""
    if name == "docker":
        from harness.sandboxes.docker import DEFAULT_IMAGE, DockerBackend

        return DockerBackend(cache_dir, default_image=docker_image or DEFAULT_IMAGE)
    if name == "bwrap":
        from harness.sandboxes.bwrap import BwrapBackend

        return BwrapBackend(cache_dir)
    if name == "local":
        from harness.sandboxes.local import LocalBackend

        return LocalBackend(cache_dir)
    raise ConfigError(
        f"unknown sandbox backend {name!r}", hint=f"choose one of {', '.join(BACKENDS)}"
    )
