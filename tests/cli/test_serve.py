"""`harness serve` as a user runs it: a subprocess on a free port, then Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from harness.llm.base import ChatRequest, Message, Sampling
from harness.llm.local import LocalLLM
from harness.llm.openai_http import OpenAIHTTP
from tests.fixtures.signals import default_sigint


@asynccontextmanager
async def harness_serve(*args: str, env: dict[str, str]) -> AsyncIterator[str]:
    """Run `python -m harness serve ARGS --port 0`; yield the base URL it prints."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harness",
        "serve",
        *args,
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
        preexec_fn=default_sigint,  # the test ends it with SIGINT
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
        match = re.search(r"at (http://\S+/v1)", line)
        assert match, line + (await proc.stderr.read()).decode()  # type: ignore[union-attr]
        yield match.group(1)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 60)


@pytest.mark.parametrize(
    "extra",
    [
        ("--draft-model", "none"),
        (),  # lookup (suffix) drafts, the default
        ("--draft-model", "suffix", "--speculate", "5"),
        ("--speculate", "3", "--draft-model", "self:1"),  # greedy output stays the target's
        ("--conformal-alpha", "1.0"),  # every step rejected: the target writes them all
    ],
    ids=["plain", "default-suffix", "suffix", "token-speculation", "steps"],
)
async def test_serve_answers_like_the_in_process_model(
    tiny_model_dir: Path, tiny_llm: LocalLLM, tmp_path: Path, extra: tuple[str, ...]
) -> None:
    request = ChatRequest(
        messages=(Message("user", "Fix the failing test"),), sampling=Sampling(max_tokens=12)
    )
    expected = await tiny_llm.chat(request)
    env = {"HARNESS_CACHE_DIR": str(tmp_path)}
    args = ("--model", f"hf:{tiny_model_dir}", "--device", "cpu", *extra)
    async with harness_serve(*args, env=env) as url:
        async with httpx.AsyncClient() as http:
            health = await http.get(url.removesuffix("/v1") + "/health")
        client = OpenAIHTTP(str(tiny_model_dir), base_url=url)
        response = await client.chat(request)
        await client.aclose()
    assert health.json()["status"] == "ok"
    assert (response.text, response.usage) == (expected.text, expected.usage)


async def test_serve_refuses_bad_requests_and_goes_on_serving_its_names(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Issue 13's seed no longer kills the engine; --served-model-name sets what clients send."""
    env = {"HARNESS_CACHE_DIR": str(tmp_path)}
    args = ("--model", f"hf:{tiny_model_dir}", "--device", "cpu", "--served-model-name", "coder")
    chat = {"model": "coder", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    async with harness_serve(*args, env=env) as url, httpx.AsyncClient() as http:
        bad = await http.post(f"{url}/chat/completions", json={**chat, "seed": 2**70})
        other = await http.post(f"{url}/chat/completions", json={**chat, "model": "gpt-4o"})
        good = await http.post(f"{url}/chat/completions", json=chat)
        health = await http.get(url.removesuffix("/v1") + "/health")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "seed"
    assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"
    assert good.status_code == 200 and good.json()["usage"]["completion_tokens"] == 3
    assert health.status_code == 200


def test_empty_served_model_name_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness", "serve", "--served-model-name", " "],
        capture_output=True,
        text=True,
        env={**os.environ, "HARNESS_CACHE_DIR": str(tmp_path)},
        timeout=120,
    )
    assert result.returncode == 2
    assert "--served-model-name must not be empty" in result.stderr


async def test_ctrl_c_stops_the_server(tmp_path: Path) -> None:
    script = tmp_path / "replies.json"
    script.write_text('["hello"]')
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harness",
        "serve",
        "--model",
        f"script:{script}",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    assert proc.stdout is not None
    assert "serving" in (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 60) == 130


def test_bad_spec_exits_2_with_the_valid_forms(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness", "serve", "--model", "gpt-4o"],
        capture_output=True,
        text=True,
        env={**os.environ, "HARNESS_CACHE_DIR": str(tmp_path), "COLUMNS": "250"},
        timeout=120,
    )
    assert result.returncode == 2
    assert "error: unknown model name 'gpt-4o'" in result.stderr
    assert "openai:<model>" in result.stderr


def test_serve_reads_its_sections_of_the_config_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    """`serve:` (address, names) and `engine:` come from the same --config file as solve's;
    flags override them."""
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path)}

    def first_line(*args: str) -> str:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=default_sigint,
        )
        try:
            assert proc.stdout is not None
            return proc.stdout.readline()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)

    script = tmp_path / "replies.json"
    script.write_text('["hello"]')
    config = tmp_path / "harness.yaml"
    config.write_text(
        f"model: script:{script}\nserve:\n  host: 127.0.0.1\n  port: 0\n"
        "  served_model_names: [coder, helper]\n"
    )
    line = first_line("--config", str(config))
    assert re.search(r"serving coder, helper at http://127\.0\.0\.1:[1-9]\d*/v1", line), line
    # An engine too small for the model's window: the `engine:` section reached the engine.
    config.write_text(f"model: hf:{tiny_model_dir}\nengine:\n  kv_memory_gb: 0.000001\n")
    common = ["--config", str(config), "--device", "cpu", "--port", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "harness", "serve", *common],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2 and "the KV cache budget holds only" in done.stderr
    assert "serving" in first_line(*common, "--no-engine")  # the flag wins over the file
