"""Shared fixtures: a tiny real transformers model on disk, and that model loaded in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.tiny_model import build_tiny_model


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
