"""Token accounting: prices per model, the dollar cost of a call, prompt-size estimates, and
checks on the usage a backend reports.

Prices are passed in (a mapping model -> `Price`, the shipped table is `harness.llm.prices`);
`cost_usd` of a model without a price is 0, so callers that cap dollars require a price first.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError, LLMError
from harness.llm.base import ChatRequest, Usage

# Chat templates wrap each message in a few special tokens; this covers the common ones.
_TOKENS_PER_MESSAGE = 8
_TOKENS_PER_PROMPT = 8


@dataclass(frozen=True)
class Price:
    """US dollars per one million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def valid(self) -> bool:
        return all(math.isfinite(p) and p >= 0 for p in (self.input_per_mtok, self.output_per_mtok))

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


PriceTable = Mapping[str, Price]


# A dated snapshot or alias of a model: gpt-4o-2024-08-06, claude-opus-4-20250514, x-latest.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


def price_for(prices: PriceTable, model: str) -> Price | None:
    """The exact name, else without a provider prefix (`openai/gpt-4o`), else without a
    snapshot suffix (`gpt-4o-2024-08-06`). Never a mere prefix: `gpt-5-pro` is not `gpt-5`."""
    bare = model.rsplit("/", 1)[-1]
    for name in (model, bare, _SNAPSHOT.sub("", bare)):
        if name in prices:
            return prices[name]
    return None


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
            price = Price(float(entry["input"]), float(entry["output"]))
            if not price.valid():
                raise ValueError("prices must be finite and >= 0")
            table[str(model)] = price
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


def max_prompt_tokens(request: ChatRequest) -> int:
    """A hard upper bound on a prompt's tokens: byte-level BPE yields at most one token per
    UTF-8 byte, plus the chat template's special tokens."""
    return _TOKENS_PER_PROMPT + sum(
        _TOKENS_PER_MESSAGE + len(m.content.encode("utf-8")) for m in request.messages
    )


def checked_usage(request: ChatRequest, usage: Usage, source: str) -> tuple[Usage, str | None]:
    """The usage a backend reported for `request`, checked: a negative count is an LLMError;
    counts beyond what the request allows (the prompt's byte bound, max_tokens) are clamped.
    Returns the usage to account and, when clamped, a warning that says what was reported."""
    if usage.prompt_tokens < 0 or usage.completion_tokens < 0:
        raise LLMError(
            f"{source} reported negative token usage (prompt {usage.prompt_tokens}, "
            f"completion {usage.completion_tokens})",
            hint="the server's usage accounting is broken; use another server or model",
        )
    prompt_cap, completion_cap = max_prompt_tokens(request), request.sampling.max_tokens
    clamped = Usage(
        min(usage.prompt_tokens, prompt_cap), min(usage.completion_tokens, completion_cap)
    )
    if clamped == usage:
        return usage, None
    return clamped, (
        f"{source} reported {usage.prompt_tokens} prompt + {usage.completion_tokens} completion "
        f"tokens, beyond what the request allows ({prompt_cap} + {completion_cap}); "
        "counted as the allowed maximum"
    )
