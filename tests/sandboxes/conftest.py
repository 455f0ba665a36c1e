"""Backends under test: every contract test runs on docker, bwrap and local."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.sandboxes import SandboxBackend, make_backend
from tests.conftest import BASE_IMAGE, docker_ready, make_repo

__all__ = ["BASE_IMAGE", "docker_ready"]


def skip_unless_available(name: str) -> None:
    if name == "docker":
        reason = docker_ready()
        if reason:
            pytest.skip(f"docker unavailable: {reason}")
    if name == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")


@pytest.fixture(params=["docker", "bwrap", "local"])
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name in ("docker", "bwrap"):  # under CI=true their skip is a failure
        request.applymarker(getattr(pytest.mark, name))
    skip_unless_available(name)
    return name


@pytest.fixture
async def backend(backend_name: str, cache_dir: Path) -> AsyncIterator[SandboxBackend]:
    async with make_backend(backend_name, cache_dir) as be:
        yield be


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    make_repo(
        path,
        {
            "calc.py": "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n",
            "README.md": "# calc\n",
            "pkg/__init__.py": "",
        },
    )
    return path
