"""Building the engine for a loaded model: KV-cache sizing from free memory, and the knobs
users set (`engine.*` of the config file, or flags such as `harness serve --kv-policy`),
draft/target decoding included (`engine.speculate`, `engine.draft_model`,
`engine.conformal_alpha`).

Torch is imported lazily so that the settings can live in configuration without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError
from harness.llm.engine.config import FALLBACKS, SpecConfig

if TYPE_CHECKING:
    from harness.llm.engine.client import EngineLLM

GIB = 1 << 30
DEFAULT_SPECULATE = 4  # draft tokens per round when a draft model is named without --speculate
LOOKUP_SPECULATE = 12  # ... and for lookup drafts (suffix.py), which cost no draft forwards
# Lookup drafts cost only verification: the extra time of a verified token relative to a
# decode step (measured: SmolLM2-135M on 2 CPU cores, benchmarks/agent_turns.py).
LOOKUP_COST_RATIO = 0.05
LOOKUP_BY_DEFAULT = True  # token-level lookup speculation when nothing else is configured
SUFFIX = "suffix"
NONE = "none"


@dataclass(frozen=True)
class EngineSettings:
    enabled: bool = True  # False: plain transformers `generate`, one request at a time
    policy: str = "ttl"  # none | lru | ttl (see docs/engine.md)
    kv_memory_gb: float | None = None  # None: 80% of free GPU memory, or min(2 GiB, 25%) of RAM
    cpu_offload_gb: float = 0.0  # host memory for pins that would otherwise be dropped
    block_size: int = 16
    max_num_seqs: int = 64
    max_batched_tokens: int = 2048
    # Draft/target decoding (docs/engine.md, "Speculative decoding"). Token level when
    # `speculate` > 0 (or a draft model is named), step level (ATTS) when `conformal_alpha`
    # is set. Without a draft model the target's first `self_draft_layers` layers draft.
    # A model spec, "self" / "self:L" (the target's first layers), "suffix" (lookup drafts:
    # no model), "none"; None: lookup drafts for token level (on by default), self for steps.
    draft_model: str | None = None
    self_draft_layers: int | None = None  # None: a quarter of the target's layers
    speculate: int | None = None  # most draft tokens per round; 0: off; None: the drafter's
    adaptive_k: bool = True  # pick k per sequence from its acceptance rate (<= speculate)
    cost_ratio: float | None = None  # draft / target time per token; None: from weight bytes
    conformal_alpha: float | None = None  # rejection level of step-level speculation
    step_delimiter: str = "\n"  # a step ends at a token whose text contains this
    step_max_tokens: int = 32
    calibration_window: int = 512  # recent step scores the conformal threshold uses
    rejection_fallback: str = "target"  # target (writes the step) | resample (the draft redraws)
    resample_attempts: int = 2  # redraws before the target writes the step

    def __post_init__(self) -> None:
        if self.speculate is not None and self.speculate < 0:
            raise ConfigError(
                "engine.speculate must be >= 0 (0 turns token-level speculation off)",
                hint="e.g. --speculate 4 (draft tokens per round), or 0",
            )
        if self.conformal_alpha is not None and not 0.0 < self.conformal_alpha <= 1.0:
            raise ConfigError(
                f"engine.conformal_alpha must be in (0, 1], got {self.conformal_alpha}",
                hint="the share of draft steps the target rejects, e.g. 0.2",
            )
        if self.rejection_fallback not in FALLBACKS:
            raise ConfigError(
                f"unknown engine.rejection_fallback {self.rejection_fallback!r}",
                hint=f"one of {FALLBACKS}",
            )
        if self.self_draft_layers is not None and self.self_draft_layers < 1:
            raise ConfigError(
                "engine.self_draft_layers must be >= 1",
                hint="e.g. -c engine.self_draft_layers=4, or leave it out (a quarter)",
            )
        if self.step_max_tokens < 1 or self.calibration_window < 1 or self.resample_attempts < 0:
            raise ConfigError(
                "engine.step_max_tokens and calibration_window must be positive, "
                "resample_attempts >= 0",
                hint="e.g. -c engine.step_max_tokens=32 -c engine.calibration_window=512",
            )
        if self.conformal_alpha is not None and self._named() == SUFFIX:
            raise ConfigError(
                "engine.conformal_alpha (step-level speculation) needs a draft model, not "
                "suffix lookup drafts",
                hint="use --draft-model self (or a model spec) with --conformal-alpha",
            )
        self.draft()  # checks a "self:L" spec

    def _named(self) -> str:
        return (self.draft_model or "").strip()

    @property
    def requested(self) -> bool:
        """Speculation was asked for explicitly (not just the default)."""
        named = self._named()
        return (
            (self.speculate or 0) > 0
            or self.conformal_alpha is not None
            or (bool(named) and named != NONE)
        )

    @property
    def speculation(self) -> bool:
        if (self.speculate == 0 and self.conformal_alpha is None) or self._named() == NONE:
            return False
        return self.requested or LOOKUP_BY_DEFAULT

    @property
    def lookup(self) -> bool:
        """Token-level speculation with lookup drafts (suffix.py), no draft model."""
        named = self._named()
        return self.speculation and (
            named == SUFFIX or (not named and self.conformal_alpha is None and LOOKUP_BY_DEFAULT)
        )

    def draft(self) -> tuple[str | None, int | None]:
        """(spec of a separate draft model, or None for the self-draft or lookup drafts;
        self-draft layers)."""
        spec = self._named()
        if spec in (SUFFIX, NONE):
            return None, self.self_draft_layers
        if spec != "self" and not spec.startswith("self:"):
            return spec or None, self.self_draft_layers
        if spec == "self":
            return None, self.self_draft_layers
        try:
            layers = int(spec[len("self:") :])
        except ValueError:
            layers = 0
        if layers < 1:
            raise ConfigError(
                f"draft model {spec!r}: 'self:L' needs a layer count L >= 1",
                hint="e.g. --draft-model self:8 (the target's first 8 layers draft)",
            )
        return None, layers

    def spec_config(self, *, cost_ratio: float, delimiter_ids: frozenset[int]) -> SpecConfig:
        default = LOOKUP_SPECULATE if self.lookup else DEFAULT_SPECULATE
        return SpecConfig(
            k=self.speculate or default,
            adaptive=self.adaptive_k,
            cost_ratio=self.cost_ratio if self.cost_ratio is not None else cost_ratio,
            conformal_alpha=self.conformal_alpha,
            step_max_tokens=self.step_max_tokens,
            delimiter_ids=delimiter_ids,
            calibration_window=self.calibration_window,
            fallback=self.rejection_fallback,  # type: ignore[arg-type]  # checked above
            resample_attempts=self.resample_attempts,
        )


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4 * GIB


def kv_budget_bytes(settings: EngineSettings, device: str) -> int:
    if settings.kv_memory_gb is not None:
        return int(settings.kv_memory_gb * GIB)
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(0.8 * free)
    return min(2 * GIB, _available_ram() // 4)


def build_engine_llm(
    model: Any,
    tokenizer: Any,
    *,
    name: str,
    settings: EngineSettings,
    context_window: int | None,
    draft_model: Any = None,
) -> EngineLLM:
    """Wrap a loaded model (on one device) in the engine, sized to the memory available.

    With speculation on, `draft_model` (loaded on the same device) drafts; without one, the
    target's first layers do.
    """
    from harness.llm.engine.client import EngineLLM
    from harness.llm.engine.config import EngineConfig
    from harness.llm.engine.runner import kv_bytes_per_block

    device = str(next(model.parameters()).device)
    per_block = kv_bytes_per_block(model, settings.block_size)
    if draft_model is not None:  # a second model keeps its own KV in the same blocks
        per_block += kv_bytes_per_block(draft_model, settings.block_size)
    num_blocks = kv_budget_bytes(settings, device) // per_block
    window = context_window or 32768
    if num_blocks * settings.block_size < min(window, 4096):
        raise ConfigError(
            f"the KV cache budget holds only {num_blocks * settings.block_size} tokens",
            hint="raise engine.kv_memory_gb, or turn the engine off (engine.enabled=false)",
        )
    config = EngineConfig(
        block_size=settings.block_size,
        num_blocks=int(num_blocks),
        num_cpu_blocks=int(settings.cpu_offload_gb * GIB // per_block),
        max_num_seqs=settings.max_num_seqs,
        max_batched_tokens=settings.max_batched_tokens,
        max_model_len=window,
        policy=settings.policy,  # type: ignore[arg-type]  # checked by EngineConfig
        cuda_graphs=device.startswith("cuda"),
    )
    if not settings.speculation:
        return EngineLLM(model, tokenizer, config=config, model_name=name)
    if settings.lookup:
        ratio = settings.cost_ratio if settings.cost_ratio is not None else LOOKUP_COST_RATIO
        spec = settings.spec_config(cost_ratio=ratio, delimiter_ids=frozenset())
        return EngineLLM(
            model, tokenizer, config=config, model_name=name, speculation=spec, lookup=True
        )
    spec, layers = _speculation(model, tokenizer, settings, draft_model)
    return EngineLLM(
        model,
        tokenizer,
        config=config,
        model_name=name,
        speculation=spec,
        draft_model=draft_model,
        self_draft_layers=layers,
    )


def _speculation(
    model: Any, tokenizer: Any, settings: EngineSettings, draft_model: Any
) -> tuple[SpecConfig, int | None]:
    from harness.llm.engine.draft import default_self_draft_layers, delimiter_ids, streamed_bytes

    layers = None
    named = settings.draft()[0]
    if named is not None and draft_model is None:
        raise ConfigError(f"the draft model {named!r} was named but not loaded")
    if draft_model is None:
        layers = settings.draft()[1] or default_self_draft_layers(model)
        draft_bytes = streamed_bytes(model, layers)
    else:
        draft_bytes = streamed_bytes(draft_model)
    ratio = draft_bytes / max(1, streamed_bytes(model))
    delims = frozenset[int]()
    if settings.conformal_alpha is not None:
        delims = delimiter_ids(tokenizer, settings.step_delimiter)
    return settings.spec_config(cost_ratio=ratio, delimiter_ids=delims), layers
