"""Token accounting: prices per model, the dollar cost of a call, and prompt-size estimates.

Prices are passed in (a mapping model -> `Price`); an unknown or local model costs 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError
from harness.llm.base import ChatRequest, Usage

# Chat templates wrap each message in a few special tokens; this covers the common ones.
_TOKENS_PER_MESSAGE = 8
_TOKENS_PER_PROMPT = 8


@dataclass(frozen=True)
class Price:
    """US dollars per one million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


PriceTable = Mapping[str, Price]


def price_for(prices: PriceTable, model: str) -> Price | None:
    """Exact name first, then without a provider prefix (`openai/gpt-4o`), then the longest
    table key the name starts with (so dated snapshots like `gpt-4o-2024-08-06` match)."""
    for name in (model, model.rsplit("/", 1)[-1]):
        if name in prices:
            return prices[name]
    bare = model.rsplit("/", 1)[-1]
    matches = [key for key in prices if key and bare.startswith(key)]
    return prices[max(matches, key=len)] if matches else None


def cost_usd(prices: PriceTable, model: str, usage: Usage) -> float:
    price = price_for(prices, model)
    return price.cost(usage.prompt_tokens, usage.completion_tokens) if price else 0.0


def load_prices(path: Path) -> dict[str, Price]:
    """Read `{"model": {"input": $/Mtok, "output": $/Mtok}, ...}` from a JSON or YAML file."""
    import yaml  # JSON is a subset of YAML

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read price table {path}: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"price table {path} must map model names to prices")
    table: dict[str, Price] = {}
    for model, entry in raw.items():
        try:
            table[str(model)] = Price(float(entry["input"]), float(entry["output"]))
        except (TypeError, KeyError, ValueError) as e:
            raise ConfigError(
                f"price table {path}: entry {model!r} is {json.dumps(entry, default=str)}",
                hint='each entry needs numbers "input" and "output" in $ per 1M tokens',
            ) from e
    return table


def estimate_tokens(text: str) -> int:
    """A deliberately high token count for `text` without a tokenizer.

    Byte-level BPE never yields more tokens than UTF-8 bytes, and real text averages 3-4 bytes a
    token; half the byte count over-counts nearly everything, which keeps budgets safe.
    """
    return math.ceil(len(text.encode("utf-8")) / 2)


def estimate_prompt_tokens(request: ChatRequest) -> int:
    return _TOKENS_PER_PROMPT + sum(
        _TOKENS_PER_MESSAGE + estimate_tokens(m.content) for m in request.messages
    )
