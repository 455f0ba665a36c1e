"""The in-process transformers backend on the tiny real model: loading, streaming, limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ContextTooLong, LLMError, ModelSpecError
from harness.llm.base import ChatRequest, ChatResponse, Message, Sampling, StreamingLLM, TextDelta
from harness.llm.local import LocalLLM, resolve_model_dir
from tests.fixtures.tiny_model import CONTEXT_WINDOW


def ask(text: str, max_tokens: int = 20, stop: tuple[str, ...] = ()) -> ChatRequest:
    return ChatRequest(
        messages=(Message("user", text),), sampling=Sampling(max_tokens=max_tokens), stop=stop
    )


async def test_async_load_gives_a_streaming_llm(tiny_model_dir: Path) -> None:
    llm = await LocalLLM.load(str(tiny_model_dir), device="cpu")
    assert isinstance(llm, StreamingLLM)
    assert llm.model_name == str(tiny_model_dir)
    assert llm.context_window == CONTEXT_WINDOW
    response = await llm.chat(ask("hello", max_tokens=3))
    assert response.usage.completion_tokens == 3
    await llm.aclose()
    with pytest.raises(LLMError, match="closed"):
        await llm.chat(ask("hello"))
    await llm.aclose()  # idempotent


async def test_stream_deltas_join_into_the_final_text(tiny_llm: LocalLLM) -> None:
    events = [e async for e in tiny_llm.stream(ask("Fix the failing test", max_tokens=30))]
    *deltas, final = events
    assert isinstance(final, ChatResponse)
    assert all(isinstance(d, TextDelta) for d in deltas) and len(deltas) > 1
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == final.text


async def test_stream_matches_chat(tiny_llm: LocalLLM) -> None:
    request = ask("class Sandbox:", max_tokens=25)
    streamed = [e async for e in tiny_llm.stream(request)][-1]
    chatted = await tiny_llm.chat(request)
    assert isinstance(streamed, ChatResponse)
    assert (streamed.text, streamed.usage, streamed.finish_reason) == (
        chatted.text,
        chatted.usage,
        chatted.finish_reason,
    )


async def test_closing_a_stream_early_leaves_the_model_usable(tiny_llm: LocalLLM) -> None:
    stream = tiny_llm.stream(ask("Hello, world!", max_tokens=200))
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await stream.aclose()
    assert (await tiny_llm.chat(ask("hello", max_tokens=2))).usage.completion_tokens == 2


async def test_max_tokens_is_capped_by_the_window(tiny_llm: LocalLLM) -> None:
    request = ask("fox " * 100, max_tokens=1000)
    prompt = len(tiny_llm.prompt_ids(request))
    assert prompt < CONTEXT_WINDOW
    response = await tiny_llm.chat(request)
    assert response.usage.prompt_tokens == prompt
    assert prompt + response.usage.completion_tokens <= CONTEXT_WINDOW


async def test_context_too_long_names_both_numbers(tiny_llm: LocalLLM) -> None:
    request = ask("fox " * 400)
    prompt = len(tiny_llm.prompt_ids(request))
    with pytest.raises(ContextTooLong) as info:
        await tiny_llm.chat(request)
    assert f"prompt is {prompt} tokens" in str(info.value)
    assert f"context window is {CONTEXT_WINDOW} tokens" in str(info.value)


async def test_a_seed_torch_cannot_take_is_refused_and_the_model_keeps_serving(
    tiny_llm: LocalLLM,
) -> None:
    bad = ChatRequest(
        messages=(Message("user", "hi"),),
        sampling=Sampling(max_tokens=3, temperature=1.0, seed=1180591620717411303424),
    )
    with pytest.raises(LLMError, match=r"seed .* is out of range"):
        await tiny_llm.chat(bad)
    assert (await tiny_llm.chat(ask("hello", max_tokens=3))).usage.completion_tokens == 3


def test_missing_directory_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="does not exist"):
        LocalLLM.from_pretrained(str(tmp_path / "nope"))


def test_missing_gguf_file_lists_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "other.Q8_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelSpecError, match=r"GGUF file model\.gguf not found") as info:
        LocalLLM.from_pretrained(str(tmp_path), gguf_file="model.gguf")
    assert "other.Q8_0.gguf" in (info.value.hint or "")


def test_uncached_hub_id_fails_offline_with_a_hint() -> None:
    with pytest.raises(ModelSpecError, match="not in the local Hugging Face cache") as info:
        LocalLLM.from_pretrained("harness-tests/no-such-model")
    assert "hf download" in (info.value.hint or "")


def test_a_gguf_path_resolves_to_its_directory(tmp_path: Path) -> None:
    file = tmp_path / "m.gguf"
    file.write_bytes(b"GGUF")
    assert resolve_model_dir(str(file)) == (tmp_path, "m.gguf")


def test_a_directory_without_a_model_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="cannot load model"):
        LocalLLM.from_pretrained(str(tmp_path))


def test_a_corrupt_gguf_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "bad.gguf").write_bytes(b"this is not a gguf file")
    with pytest.raises(LLMError, match="cannot load model"):
        LocalLLM.from_pretrained(str(tmp_path / "bad.gguf"))


def test_a_model_without_chat_template_is_refused(tiny_llm: LocalLLM) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm._tokenizer.name_or_path)
    tokenizer.chat_template = None
    with pytest.raises(ModelSpecError, match="no chat template"):
        LocalLLM(tiny_llm._model, tokenizer, name="base-model")
