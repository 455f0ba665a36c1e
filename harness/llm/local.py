"""In-process chat backend on Hugging Face transformers: one worker thread, one request at a time.

Loads hub ids (from the local cache only, offline), local directories and GGUF files. A later
engine swaps the insides for continuous batching behind the same `LLM` protocol.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
)

from harness.errors import ContextTooLong, LLMError, ModelSpecError
from harness.llm.base import ChatRequest, ChatResponse, FinishReason, TextDelta, Usage
from harness.llm.stops import IncrementalDetokenizer, StopScanner

SEED_RANGE = (-(1 << 63), (1 << 64) - 1)  # what torch.manual_seed accepts

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
# A GGUF file holds ~4-bit weights that load dequantized to 16 bits or more.
_GGUF_EXPANSION = 4
_LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, ImportError, TypeError)


def resolve_model_dir(target: str, gguf_file: str | None = None) -> tuple[Path, str | None]:
    """A local directory (and GGUF file name in it) for `target`: a dir, a .gguf file, or a hub
    id already in the local Hugging Face cache. Nothing is downloaded."""
    path = Path(target).expanduser()
    if path.is_file() and path.suffix == ".gguf" and gguf_file is None:
        return path.parent, path.name
    if path.is_dir():
        model_dir = path
    elif path.is_absolute() or target.startswith((".", "~")) or not _HUB_ID.match(target):
        raise ModelSpecError(
            f"model directory {path} does not exist",
            hint="give a directory with config.json (or a .gguf file), or a cached hub id",
        )
    else:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            model_dir = Path(snapshot_download(target, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError) as e:
            raise ModelSpecError(
                f"{target} is not in the local Hugging Face cache (models load offline here)",
                hint=f"download it where there is network (`hf download {target}`) and copy the "
                "cache, or pass a local directory as hf:<dir>",
            ) from e
    if gguf_file is not None and not (model_dir / gguf_file).is_file():
        found = sorted(p.name for p in model_dir.glob("*.gguf"))
        raise ModelSpecError(
            f"GGUF file {gguf_file} not found in {model_dir}",
            hint=f"GGUF files there: {', '.join(found)}" if found else "that dir has no .gguf file",
        )
    return model_dir, gguf_file


def _weight_bytes(model_dir: Path, gguf_file: str | None) -> int:
    if gguf_file is not None:
        return (model_dir / gguf_file).stat().st_size * _GGUF_EXPANSION
    return sum(p.stat().st_size for p in model_dir.iterdir() if p.suffix in _WEIGHT_SUFFIXES)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _context_window(model: Any, tokenizer: Any) -> int | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
    window = getattr(config or model.config, "max_position_embeddings", None)
    if isinstance(window, int) and window > 0:
        return window
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else None


class _Watcher(StoppingCriteria):  # type: ignore[misc]
    """Runs after every decoded token: streams text, finds stop strings, honours cancel."""

    def __init__(
        self,
        tokenizer: Any,
        prompt_len: int,
        scanner: StopScanner,
        on_delta: Callable[[str], None] | None,
        cancel: threading.Event,
    ) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.scanner = scanner
        self.on_delta = on_delta
        self.cancel = cancel
        self.active = bool(scanner.stops or on_delta)
        self.detok = IncrementalDetokenizer(tokenizer)
        self.seen = 0  # generated ids pushed to the detokenizer

    def push(self, new: list[int]) -> None:
        self.seen += len(new)
        delta = self.scanner.push(self.detok.push(new))
        if delta and self.on_delta:
            self.on_delta(delta)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
        if not self.cancel.is_set() and self.active:
            self.push(input_ids[0, self.prompt_len + self.seen :].tolist())  # new ids only
        done = self.cancel.is_set() or self.scanner.stopped
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def load_pretrained(
    target: str, *, gguf_file: str | None = None, device: str | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) from a local dir, a GGUF file or the local HF cache; blocking."""
    model_dir, gguf_file = resolve_model_dir(target, gguf_file)
    device = device or _default_device()
    options: dict[str, Any] = {"local_files_only": True}
    if gguf_file is not None:
        options["gguf_file"] = gguf_file
    on_gpu = device.startswith("cuda")
    # GGUF weights dequantize to float32 unless told otherwise; bf16 halves GPU memory.
    dtype: Any = torch.float32 if not on_gpu else ("auto" if gguf_file is None else torch.bfloat16)
    # Let accelerate place layers (over GPUs, then CPU) only when the weights would not
    # fit comfortably on the chosen GPU; small models run faster on one device.
    spread = (
        on_gpu
        and _weight_bytes(model_dir, gguf_file)
        > 0.7 * torch.cuda.get_device_properties(torch.device(device).index or 0).total_memory
    )
    converted = _converted_dir(model_dir, gguf_file, dtype) if not spread else None
    try:
        if converted is not None and converted.is_dir():
            tokenizer: Any = AutoTokenizer.from_pretrained(converted, local_files_only=True)
            model: Any = AutoModelForCausalLM.from_pretrained(
                converted, dtype=dtype, local_files_only=True
            )
        else:
            tokenizer = AutoTokenizer.from_pretrained(model_dir, **options)
            model = AutoModelForCausalLM.from_pretrained(
                model_dir, dtype=dtype, device_map="auto" if spread else None, **options
            )
            if converted is not None:
                _save_converted(model, tokenizer, converted)
    except _LOAD_ERRORS as e:
        raise LLMError(f"cannot load model {target}: {e}") from e
    if not spread:
        model = model.to(device)
    return model.eval(), tokenizer


def _converted_dir(model_dir: Path, gguf_file: str | None, dtype: Any) -> Path | None:
    """Where a GGUF model is kept once converted (dequantized weights as safetensors, the
    tokenizer as tokenizer.json): converting takes most of a small model's load time. Keyed
    by the GGUF file's name, size and mtime, and the dtype."""
    if gguf_file is None:
        return None
    try:
        st = (model_dir / gguf_file).stat()
    except OSError:
        return None
    name = str(dtype).removeprefix("torch.")
    return model_dir / ".converted" / f"{gguf_file}-{st.st_size}-{st.st_mtime_ns}-{name}"


def _save_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Write the conversion next to the GGUF file (atomically: a whole directory or none).
    A read-only store, a full disk or a model that will not serialize just skips it."""
    tmp = target.parent / f".tmp-{os.getpid()}-{target.name}"
    quantizer = getattr(model, "hf_quantizer", None)
    config = model.config
    qconfig = getattr(config, "quantization_config", None)
    try:
        # The weights are plain tensors once dequantized; only the marker forbids saving.
        model.hf_quantizer = None
        if qconfig is not None:
            del config.quantization_config
        tmp.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except (OSError, ValueError, RuntimeError, TypeError, AttributeError):
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        model.hf_quantizer = quantizer
        if qconfig is not None:
            config.quantization_config = qconfig


class LocalLLM:
    """A transformers causal LM behind the `LLM` protocol. Calls queue on one worker thread."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        context_window: int | None = None,
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ModelSpecError(
                f"{name} has no chat template", hint="use an instruct / chat model"
            )
        self._model = model
        self._tokenizer = tokenizer
        self._name = name
        self.context_window = context_window or _context_window(model, tokenizer)
        eos = model.generation_config.eos_token_id
        self._eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
        pads = (
            model.generation_config.pad_token_id,
            tokenizer.pad_token_id,
            *sorted(self._eos_ids),
        )
        self._pad_id = next((p for p in pads if p is not None), None)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="harness-llm")
        self._active: set[threading.Event] = set()
        self._closed = False

    @classmethod
    def from_pretrained(
        cls,
        target: str,
        *,
        gguf_file: str | None = None,
        device: str | None = None,
        name: str | None = None,
        context_window: int | None = None,
    ) -> LocalLLM:
        """Load blocking (seconds to minutes); `load` is the async form."""
        model, tokenizer = load_pretrained(target, gguf_file=gguf_file, device=device)
        return cls(model, tokenizer, name=name or target, context_window=context_window)

    @classmethod
    async def load(cls, target: str, **options: Any) -> LocalLLM:
        """`from_pretrained` (same options) off the event loop."""
        return await asyncio.to_thread(cls.from_pretrained, target, **options)

    @property
    def model_name(self) -> str:
        return self._name

    def speculation_stats(self) -> None:
        return None  # plain transformers generate(): no draft model

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        """The prompt's token ids after the chat template."""
        text = self._tokenizer.apply_chat_template(
            [asdict(m) for m in request.messages], add_generation_prompt=True, tokenize=False
        )
        ids: list[int] = self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        return ids

    async def chat(self, request: ChatRequest) -> ChatResponse:
        start = time.perf_counter()
        cancel = threading.Event()
        try:
            response = await self._submit(request, None, cancel)
        finally:
            self._done(cancel)
        return replace(response, latency_s=time.perf_counter() - start)

    async def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | ChatResponse]:
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[TextDelta | None] = asyncio.Queue()
        cancel = threading.Event()

        def on_delta(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, TextDelta(text))

        future = self._submit(request, on_delta, cancel)
        # Deltas are queued from the worker before the future resolves, so None comes last.
        future.add_done_callback(lambda f: queue.put_nowait(None))
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # mark retrieved
        try:
            while (item := await queue.get()) is not None:
                yield item
            response = future.result()
        finally:
            self._done(cancel)
        yield replace(response, latency_s=time.perf_counter() - start)

    def _submit(
        self,
        request: ChatRequest,
        on_delta: Callable[[str], None] | None,
        cancel: threading.Event,
    ) -> asyncio.Future[ChatResponse]:
        if self._closed:
            raise LLMError(f"{self._name} is closed")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._generate, request, on_delta, cancel)
        self._active.add(cancel)
        return future

    def _done(self, cancel: threading.Event) -> None:
        # Setting the flag stops a generation whose caller went away; a finished one ignores it.
        cancel.set()
        self._active.discard(cancel)

    def _generate(
        self,
        request: ChatRequest,
        on_delta: Callable[[str], None] | None,
        cancel: threading.Event,
    ) -> ChatResponse:
        ids = self.prompt_ids(request)
        n_prompt = len(ids)
        window = self.context_window
        if window is not None and n_prompt >= window:
            raise ContextTooLong(
                f"prompt is {n_prompt} tokens but {self._name}'s context window is {window} tokens",
                hint="shorten the messages (less context, truncated tool output)",
            )
        seed = request.sampling.seed
        if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
            low, high = SEED_RANGE
            raise LLMError(f"seed {seed} is out of range", hint=f"use one in [{low}, {high}]")
        max_new = request.sampling.max_tokens
        if window is not None:
            max_new = min(max_new, window - n_prompt)
        sampling = request.sampling
        sample = sampling.temperature > 0
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=max_new,
            do_sample=sample,
            temperature=sampling.temperature if sample else None,
            top_p=sampling.top_p if sample else None,
            top_k=0 if sample else None,
            eos_token_id=sorted(self._eos_ids) or None,
            pad_token_id=self._pad_id,
        )
        scanner = StopScanner(request.stop)
        watcher = _Watcher(self._tokenizer, n_prompt, scanner, on_delta, cancel)
        input_ids = torch.tensor([ids], device=self._model.device)
        with torch.inference_mode():
            if sample and sampling.seed is not None:
                torch.manual_seed(sampling.seed)  # one worker thread: no other caller races
            output = self._model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([watcher]),
            )
        generated: list[int] = output[0, n_prompt:].tolist()
        if watcher.active:
            watcher.push(generated[watcher.seen :])
            tail = scanner.push(watcher.detok.flush())
            text, rest = scanner.finish_pushed()
            rest = tail + rest
        else:
            text, rest = scanner.finish(self._tokenizer.decode(generated, skip_special_tokens=True))
        if rest and on_delta:
            on_delta(rest)
        finish: FinishReason = "stop"
        if not scanner.stopped and len(generated) >= max_new:
            finish = "stop" if generated[-1] in self._eos_ids else "length"
        return ChatResponse(
            text=text,
            finish_reason=finish,
            usage=Usage(n_prompt, len(generated)),
            latency_s=0.0,
            model=self._name,
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for cancel in self._active:
            cancel.set()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
