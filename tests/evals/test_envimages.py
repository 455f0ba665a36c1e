"""Env image builds: what makes a failed `docker build` worth a retry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.evals.envimages import EnvBuildFailed, _docker_build

# Docker's words when a cached parent layer is removed while a build uses it (seen when
# one (repo, version)'s images were pruned while the next version, sharing its first
# layers, was building). The race cannot be staged reliably, so the engine's answers are
# replayed; the retry itself then runs against the same code path as a real build.
GONE = (
    "failed to export image: failed to set parent sha256:bbf9: unknown parent image ID sha256:bbf9"
)


class _Api:
    def __init__(self, answers: list[list[dict[str, str]]]) -> None:
        self.answers = answers
        self.calls = 0

    def build(self, **_: Any) -> Iterator[dict[str, str]]:
        self.calls += 1
        return iter(self.answers.pop(0))


class _Client:
    def __init__(self, answers: list[list[dict[str, str]]]) -> None:
        self.api = _Api(answers)


def test_a_build_whose_cached_layer_vanished_is_retried(tmp_path: Path) -> None:
    ok = [{"stream": "Step 1/1 : FROM x\n"}, {"stream": "Successfully tagged t\n"}]
    client = _Client([[{"error": GONE}], ok])
    _docker_build(client, "harness-env:t", "FROM x\n", {}, {}, tmp_path / "t.log")
    assert client.api.calls == 2
    assert "retry 1" in (tmp_path / "t.log").read_text()


def test_a_real_build_error_is_not_retried(tmp_path: Path) -> None:
    client = _Client([[{"error": "The command '/bin/sh -c false' returned a non-zero code: 1"}]])
    with pytest.raises(EnvBuildFailed, match="non-zero code: 1"):
        _docker_build(client, "harness-env:t", "FROM x\n", {}, {}, tmp_path / "t.log")
    assert client.api.calls == 1
