"""Fixtures the sandbox attacks share: each attack runs on every isolating backend (docker and
bwrap; `local` isolates nothing and is attacked only where a test says so)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.sandboxes import SandboxBackend, make_backend
from tests.conftest import make_repo
from tests.sandboxes.conftest import skip_unless_available

ISOLATING_BACKENDS = [
    pytest.param("docker", marks=pytest.mark.docker),
    pytest.param("bwrap", marks=pytest.mark.bwrap),
]


@pytest.fixture(params=ISOLATING_BACKENDS)
async def backend(request: pytest.FixtureRequest, cache_dir: Path) -> AsyncIterator[SandboxBackend]:
    skip_unless_available(request.param)
    async with make_backend(request.param, cache_dir) as be:
        yield be


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    make_repo(tmp_path / "repo", {"app.py": "print('hi')\n"})
    return tmp_path / "repo"
