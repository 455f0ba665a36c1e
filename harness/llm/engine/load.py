"""Building the engine for a loaded model: KV-cache sizing from free memory, and the knobs
users set (`engine.*` in the solve config, `harness serve --kv-policy ...`).

Torch is imported lazily so that the settings can live in configuration without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.llm.engine.client import EngineLLM

GIB = 1 << 30


@dataclass(frozen=True)
class EngineSettings:
    enabled: bool = True  # False: plain transformers `generate`, one request at a time
    policy: str = "ttl"  # none | lru | ttl (see docs/engine.md)
    kv_memory_gb: float | None = None  # None: 80% of free GPU memory, or min(2 GiB, 25%) of RAM
    cpu_offload_gb: float = 0.0  # host memory for pins that would otherwise be dropped
    block_size: int = 16
    max_num_seqs: int = 64
    max_batched_tokens: int = 2048


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
) -> EngineLLM:
    """Wrap a loaded model (on one device) in the engine, sized to the memory available."""
    from harness.llm.engine.client import EngineLLM
    from harness.llm.engine.config import EngineConfig
    from harness.llm.engine.runner import kv_bytes_per_block

    device = str(next(model.parameters()).device)
    per_block = kv_bytes_per_block(model, settings.block_size)
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
    return EngineLLM(model, tokenizer, config=config, model_name=name)
