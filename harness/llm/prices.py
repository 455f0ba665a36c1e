"""The shipped price table: US dollars per one million tokens for common API models.

Standard-tier list prices, taken on 2026-12-03 from the sources below. Cached-input discounts
are not modelled (every prompt token is charged at the full input price, which over-counts and
so keeps a dollar cap safe); nor are the batch tier or long-context surcharges (prompts here
stay far below those thresholds). Prices change: override or add any of them under `prices:`
in the config (`-c 'prices.MODEL=[input, output]'`); a config entry replaces a shipped one.
"""

from __future__ import annotations

from harness.llm.accounting import Price

PRICES_AS_OF = "2026-12-03"

OPENAI_SOURCE = (
    "https://developers.openai.com/api/docs/pricing (standard tier), as transcribed by "
    "https://deploybase.ai/articles/openai-pricing (March 2026) and "
    "https://tokenmath.io/openai-api-pricing-explained (checked 2026-06-21)"
)
ANTHROPIC_SOURCE = (
    "https://docs.anthropic.com/en/docs/about-claude/pricing and "
    "https://platform.claude.com/docs/about-claude/pricing (base input / output tokens)"
)

# Keys are the model names the APIs take. Lookups also accept a provider prefix
# (`openai/gpt-4o`) and a dated snapshot (`gpt-4o-2024-08-06`, `claude-opus-4-20250514`).
OPENAI: dict[str, Price] = {
    "gpt-5.4": Price(2.50, 15.00),
    "gpt-5.1": Price(1.25, 10.00),
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-5-pro": Price(15.00, 120.00),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "o3": Price(2.00, 8.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
}
ANTHROPIC: dict[str, Price] = {
    "claude-opus-4-6": Price(5.00, 25.00),
    "claude-opus-4-5": Price(5.00, 25.00),
    "claude-opus-4-1": Price(15.00, 75.00),
    "claude-opus-4": Price(15.00, 75.00),
    "claude-opus-4-0": Price(15.00, 75.00),
    "claude-sonnet-4-6": Price(3.00, 15.00),
    "claude-sonnet-4-5": Price(3.00, 15.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-sonnet-4-0": Price(3.00, 15.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-3-haiku": Price(0.25, 1.25),
}

DEFAULT_PRICES: dict[str, Price] = {**OPENAI, **ANTHROPIC}
SOURCES: dict[str, str] = {
    **dict.fromkeys(OPENAI, OPENAI_SOURCE),
    **dict.fromkeys(ANTHROPIC, ANTHROPIC_SOURCE),
}
