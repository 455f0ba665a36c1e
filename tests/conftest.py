"""Suite-wide fixtures: real git repositories, a tiny real transformers model, Docker, and
CI's rule that a skipped Docker or bubblewrap test fails."""

from __future__ import annotations

import asyncio
import os
import subprocess
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.smollm2 import smollm2_wheel  # noqa: F401  (a fixture for every test)
from tests.fixtures.tiny_model import build_tiny_model

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SESSION_START = datetime.now(UTC).replace(microsecond=0)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Snapshot images made during this session go (most are of throw-away test
    repositories); older ones, such as the bundled example's, stay cached."""
    if docker_ready() is not None:
        return
    from harness.sandboxes.docker import LABEL_IMAGE, _remove_image, connect

    client = connect()
    try:
        # The low-level listing: the SDK's `images.list` inspects each image it lists and
        # fails on one another session removes meanwhile.
        for image in client.api.images(filters={"label": LABEL_IMAGE}):
            labels = image.get("Labels") or {}
            if not labels.get(LABEL_IMAGE, "").startswith("snapshot-"):
                continue
            if datetime.fromtimestamp(image["Created"], UTC) >= SESSION_START:
                with warnings.catch_warnings():  # one still in use elsewhere stays
                    warnings.simplefilter("ignore")
                    _remove_image(client, image["Id"])
    finally:
        client.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not IN_CI or not report.skipped:
        return
    for marker, what in (("docker", "a Docker test"), ("bwrap", "a bubblewrap test")):
        if item.get_closest_marker(marker) is not None:
            report.outcome = "failed"
            report.longrepr = f"CI=true: {what} may not be skipped ({report.longrepr})"
            return


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(path: Path, files: dict[str, str], message: str = "init") -> str:
    """Create (or add a commit to) a real git repository; returns the new commit's sha."""
    if not (path / ".git").exists():
        path.mkdir(parents=True, exist_ok=True)
        git(path, "init", "-q", "-b", "main")
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", message)
    return git(path, "rev-parse", "HEAD")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


BASE_IMAGE = "harness-base:latest"


def docker_ready() -> str | None:
    """None when a Docker engine answers and the base image exists, else why not."""
    from harness.errors import HarnessError
    from harness.sandboxes.docker import connect

    try:
        client = connect()
    except HarnessError as exc:
        return str(exc)
    try:
        client.images.get(BASE_IMAGE)
    except Exception:
        return f"{BASE_IMAGE} missing: run `harness sandbox build-base`"
    finally:
        client.close()
    return None


@pytest.fixture
async def docker_backend(request: pytest.FixtureRequest, cache_dir: Path) -> Any:
    """A real docker backend (the test is marked docker: under CI=true a skip fails)."""
    from harness.sandboxes.docker import DockerBackend

    request.applymarker(pytest.mark.docker)
    reason = docker_ready()
    if reason:
        pytest.skip(f"docker unavailable: {reason}")
    async with DockerBackend(cache_dir) as backend:
        yield backend


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer and ChatML template (window 256)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_llm(tiny_model_dir: Path) -> Iterator[object]:
    """The tiny model loaded once per session in the in-process backend (a LocalLLM)."""
    from harness.llm.local import LocalLLM

    llm = LocalLLM.from_pretrained(str(tiny_model_dir), device="cpu", name="tiny")
    yield llm
    asyncio.run(llm.aclose())


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path) -> Iterator[object]:
    """The tiny model (its own copy: the engine takes the model over) on the engine."""
    from harness.llm.engine.load import EngineSettings, build_engine_llm
    from harness.llm.local import load_pretrained

    model, tokenizer = load_pretrained(str(tiny_model_dir), device="cpu")
    llm = build_engine_llm(
        model,
        tokenizer,
        name="tiny",
        context_window=model.config.max_position_embeddings,
        settings=EngineSettings(kv_memory_gb=0.02),
    )
    yield llm
    asyncio.run(llm.aclose())
