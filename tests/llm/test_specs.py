"""Model specs: parsing, clear errors with the valid forms, and the backend factory."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import ConfigError, ModelSpecError, ModelStoreError
from harness.llm.engine.client import EngineLLM
from harness.llm.engine.load import EngineSettings
from harness.llm.local import LocalLLM
from harness.llm.model_store import DEFAULT_MODEL, ModelStore
from harness.llm.openai_http import OpenAIHTTP
from harness.llm.scripted import ScriptedLLM
from harness.llm.specs import ModelSpec, make_llm, parse_spec, resolve_store


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        (
            "hf:HuggingFaceTB/SmolLM2-135M-Instruct",
            ModelSpec("hf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        ),
        (
            "hf:/models/smol?gguf=m.Q4_1.gguf",
            ModelSpec("hf", "/models/smol", gguf_file="m.Q4_1.gguf"),
        ),
        ("openai:gpt-4o", ModelSpec("openai", "gpt-4o")),
        (
            "openai:Qwen/Qwen2.5-Coder-7B?base_url=http://127.0.0.1:8000/v1",
            ModelSpec("openai", "Qwen/Qwen2.5-Coder-7B", base_url="http://127.0.0.1:8000/v1"),
        ),
        ("openai:llama3:8b", ModelSpec("openai", "llama3:8b")),
        ("smollm2-135m", ModelSpec("store", "smollm2-135m")),
        (" script:replies.json ", ModelSpec("script", "replies.json")),
    ],
)
def test_valid_specs(text: str, spec: ModelSpec) -> None:
    assert parse_spec(text) == spec


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "unknown model spec"),
        ("gpt-4o", "unknown model name 'gpt-4o'"),
        ("vllm:foo", "unknown model spec"),
        ("hf:", "names no model"),
        ("hf:dir?foo=1", "'hf:' takes only gguf"),
        ("script:x.json?gguf=a", "'script:' takes no options"),
        ("hf:dir?gguf=", "once, with a value"),
        ("hf:dir?gguf=a&gguf=b", "once, with a value"),
        ("hf:dir?gguf", "cannot read the options"),
        ("openai:m?base_url=ftp://host", "not an http(s) URL"),
    ],
)
def test_malformed_specs_say_why_and_list_the_forms(text: str, complaint: str) -> None:
    with pytest.raises(ModelSpecError) as info:
        parse_spec(text)
    assert complaint in str(info.value)
    if "unknown" in complaint:
        assert info.value.hint and "hf:<hub id or local dir>" in info.value.hint
        assert DEFAULT_MODEL in info.value.hint


names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,20}", fullmatch=True)


@given(
    kind=st.sampled_from(["hf", "openai", "script"]),
    target=names,
    gguf=st.none() | st.from_regex(r"[A-Za-z0-9._ +-]{1,12}\.gguf", fullmatch=True),
    base_url=st.none()
    | st.from_regex(r"https?://[a-z0-9.]{1,10}(:[0-9]{2,5})?(/v1)?", fullmatch=True),
)
def test_specs_round_trip_through_their_string(
    kind: str, target: str, gguf: str | None, base_url: str | None
) -> None:
    spec = ModelSpec(
        kind,  # type: ignore[arg-type]
        target,
        gguf_file=gguf if kind == "hf" else None,
        base_url=base_url if kind == "openai" else None,
    )
    assert parse_spec(str(spec)) == spec


async def test_make_llm_builds_each_backend(tiny_model_dir: Path, tmp_path: Path) -> None:
    local = await make_llm(f"hf:{tiny_model_dir}", device="cpu")
    assert isinstance(local, EngineLLM) and local.model_name == str(tiny_model_dir)
    await local.aclose()
    plain = await make_llm(
        f"hf:{tiny_model_dir}", device="cpu", engine=EngineSettings(enabled=False)
    )
    assert isinstance(plain, LocalLLM)
    await plain.aclose()
    remote = await make_llm("openai:m?base_url=http://127.0.0.1:9/v1")
    assert isinstance(remote, OpenAIHTTP) and remote.model_name == "m"
    await remote.aclose()
    default_url = await make_llm("openai:m", base_url="http://127.0.0.1:9/v1")
    assert isinstance(default_url, OpenAIHTTP)
    await default_url.aclose()
    script = tmp_path / "s.json"
    script.write_text('["hello"]')
    scripted = await make_llm(f"script:{script}")
    assert isinstance(scripted, ScriptedLLM)


async def test_openai_without_a_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no API key") as info:
        await make_llm("openai:gpt-4o")
    assert info.value.hint == "set OPENAI_API_KEY"


async def test_store_names_need_a_store_and_a_fetched_model(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="no store was given"):
        await make_llm(DEFAULT_MODEL)
    with pytest.raises(ModelStoreError, match="not fetched yet") as info:
        await make_llm(DEFAULT_MODEL, store=ModelStore(tmp_path))
    assert f"harness model fetch {DEFAULT_MODEL}" in (info.value.hint or "")


async def test_a_fetched_store_model_resolves_to_an_hf_gguf_spec(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    path = store.path(DEFAULT_MODEL)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"stand-in")  # resolution only looks for the installed file
    resolved = resolve_store(parse_spec(DEFAULT_MODEL), store)
    assert resolved == ModelSpec("hf", str(path.parent), gguf_file=path.name)


async def test_draft_models_load_beside_the_target(tiny_model_dir: Path) -> None:
    spec = f"hf:{tiny_model_dir}"
    with_draft = EngineSettings(kv_memory_gb=0.02, draft_model=spec)  # k = 4 by default
    llm = await make_llm(spec, device="cpu", engine=with_draft)
    assert isinstance(llm, EngineLLM) and (stats := llm.speculation_stats()) is not None
    assert stats.mode == "token"
    await llm.aclose()
    steps = EngineSettings(kv_memory_gb=0.02, draft_model="self:1", conformal_alpha=0.2)
    llm = await make_llm(spec, device="cpu", engine=steps)
    assert isinstance(llm, EngineLLM) and (stats := llm.speculation_stats()) is not None
    assert stats.mode == "step" and stats.alpha == 0.2
    await llm.aclose()
    with pytest.raises(ModelSpecError, match="must run in process"):
        await make_llm(spec, engine=EngineSettings(draft_model="openai:small"))
    with pytest.raises(ModelSpecError, match=f"draft model '{DEFAULT_MODEL}' names a stored"):
        await make_llm(spec, engine=EngineSettings(draft_model=DEFAULT_MODEL))
    with pytest.raises(ConfigError, match="needs the in-process engine"):
        await make_llm(spec, device="cpu", engine=EngineSettings(enabled=False, speculate=4))


async def test_lookup_drafts_by_default_and_by_name(tiny_model_dir: Path) -> None:
    from harness.llm.engine.speculative import SpeculativeRunner

    spec = f"hf:{tiny_model_dir}"
    for settings, k in (
        (EngineSettings(kv_memory_gb=0.02), 12),
        (EngineSettings(kv_memory_gb=0.02, draft_model="suffix", speculate=5), 5),
    ):
        llm = await make_llm(spec, device="cpu", engine=settings)
        assert isinstance(llm, EngineLLM) and llm.speculation_stats() is not None
        runner = llm.engine.runner
        assert isinstance(runner, SpeculativeRunner) and runner.draft is None  # no draft model
        assert runner.policy.config.k == k  # type: ignore[attr-defined]
        await llm.aclose()
    plain = await make_llm(
        spec, device="cpu", engine=EngineSettings(kv_memory_gb=0.02, draft_model="none")
    )
    assert isinstance(plain, EngineLLM) and plain.speculation_stats() is None
    await plain.aclose()
    # The default needs no engine: with the engine off a model just runs plain `generate`.
    local = await make_llm(spec, device="cpu", engine=EngineSettings(enabled=False))
    assert isinstance(local, LocalLLM)
    await local.aclose()
