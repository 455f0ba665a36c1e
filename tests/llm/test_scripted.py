"""The scripted model: replies in order, from files, running out loudly, latency by injection."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from harness.errors import ConfigError, LLMError, ModelSpecError
from harness.llm.base import ChatRequest, Message, Sampling
from harness.llm.scripted import ScriptedLLM, ScriptedReply

REQUEST = ChatRequest(messages=(Message("user", "hi"),))


async def test_replies_come_in_order_and_requests_are_recorded() -> None:
    llm = ScriptedLLM(["one", ScriptedReply("two", finish_reason="length")])
    first, second = await llm.chat(REQUEST), await llm.chat(REQUEST)
    assert (first.text, first.finish_reason) == ("one", "stop")
    assert (second.text, second.finish_reason) == ("two", "length")
    assert llm.requests == [REQUEST, REQUEST] and llm.remaining == 0


async def test_running_out_is_a_clear_error() -> None:
    llm = ScriptedLLM(["only"])
    await llm.chat(REQUEST)
    with pytest.raises(LLMError, match="ran out of responses after 1 calls"):
        await llm.chat(REQUEST)


async def test_concurrent_callers_get_replies_in_call_order() -> None:
    llm = ScriptedLLM([str(i) for i in range(5)], latency_s=0.01)
    texts = [r.text for r in await asyncio.gather(*(llm.chat(REQUEST) for _ in range(5)))]
    assert texts == ["0", "1", "2", "3", "4"]


async def test_latency_is_waited_through_the_given_sleep() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    llm = ScriptedLLM(["a", "b"], latency_s=0.25, sleep=sleep)
    await llm.chat(REQUEST)
    await llm.chat(REQUEST)
    assert waits == [0.25, 0.25]


async def test_max_tokens_truncates_with_four_characters_a_token() -> None:
    llm = ScriptedLLM(["x" * 100])
    response = await llm.chat(
        ChatRequest(messages=(Message("user", "hi"),), sampling=Sampling(max_tokens=5))
    )
    assert response.text == "x" * 20 and response.finish_reason == "length"
    assert response.usage.completion_tokens == 5 and response.usage.prompt_tokens == 1


async def test_closed_model_refuses() -> None:
    llm = ScriptedLLM(["a"])
    await llm.aclose()
    with pytest.raises(LLMError, match="closed"):
        await llm.chat(REQUEST)


async def test_json_and_yaml_files(tmp_path: Path) -> None:
    as_json = tmp_path / "replies.json"
    as_json.write_text(json.dumps(["a", {"text": "b", "finish_reason": "length"}]))
    as_yaml = tmp_path / "replies.yaml"
    as_yaml.write_text("latency_s: 0\nresponses:\n  - first\n  - text: second\n")
    from_json = ScriptedLLM.from_file(as_json)
    assert from_json.model_name == f"script:{as_json}"
    assert [(await from_json.chat(REQUEST)).finish_reason for _ in range(2)] == ["stop", "length"]
    from_yaml = ScriptedLLM.from_file(as_yaml)
    assert [(await from_yaml.chat(REQUEST)).text for _ in range(2)] == ["first", "second"]


@pytest.mark.parametrize(
    "content",
    [
        "{not: [valid",
        '{"responses": 3}',
        '[{"txt": "typo"}]',
        '[{"text": "a", "finish_reason": "eos"}]',
    ],
)
def test_bad_script_files_are_config_errors(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError):
        ScriptedLLM.from_file(path)


def test_missing_script_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="does not exist"):
        ScriptedLLM.from_file(tmp_path / "none.json")
