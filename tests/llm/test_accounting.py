"""Prices, costs and token estimates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import ConfigError, LLMError
from harness.llm.accounting import (
    Price,
    checked_usage,
    cost_usd,
    estimate_prompt_tokens,
    estimate_tokens,
    load_prices,
    max_prompt_tokens,
    price_for,
)
from harness.llm.base import ChatRequest, Message, Sampling, Usage
from harness.llm.prices import DEFAULT_PRICES, PRICES_AS_OF, SOURCES

PRICES = {"gpt-4o": Price(2.5, 10.0), "gpt-4o-mini": Price(0.15, 0.6)}


def test_price_lookup_exact_prefixed_and_dated() -> None:
    assert price_for(PRICES, "gpt-4o") == Price(2.5, 10.0)
    assert price_for(PRICES, "openai/gpt-4o-mini") == Price(0.15, 0.6)
    assert price_for(PRICES, "gpt-4o-mini-2024-07-18") == Price(0.15, 0.6)
    assert price_for(PRICES, "smollm2-135m") is None


def test_a_mere_prefix_is_not_a_price() -> None:
    # gpt-4o's price for an unknown gpt-4o-something would under-count a dollar cap.
    assert price_for(PRICES, "gpt-4o-realtime") is None
    assert price_for(DEFAULT_PRICES, "gpt-5-pro") == Price(15.0, 120.0)
    assert price_for(DEFAULT_PRICES, "gpt-5-ultra") is None
    assert price_for(DEFAULT_PRICES, "claude-opus-4-20250514") == Price(15.0, 75.0)
    assert price_for(DEFAULT_PRICES, "anthropic/claude-sonnet-4-5-20250929") == Price(3.0, 15.0)
    assert price_for(DEFAULT_PRICES, "claude-3-5-haiku-latest") == Price(0.8, 4.0)


def test_the_shipped_table_is_dated_sourced_and_sane() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", PRICES_AS_OF)
    assert set(SOURCES) == set(DEFAULT_PRICES)
    assert all(source.startswith("https://") for source in SOURCES.values())
    for name in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3", "claude-sonnet-4-5"):
        assert name in DEFAULT_PRICES
    for price in DEFAULT_PRICES.values():
        assert price.valid() and 0 < price.input_per_mtok <= price.output_per_mtok


def test_checked_usage_rejects_negative_counts_and_clamps_impossible_ones() -> None:
    request = ChatRequest((Message("user", "abcd"),), Sampling(max_tokens=10))
    bound = max_prompt_tokens(request)
    assert bound == 8 + 8 + 4
    assert checked_usage(request, Usage(5, 10), "s") == (Usage(5, 10), None)
    usage, warning = checked_usage(request, Usage(bound + 1, 11), "s")
    assert usage == Usage(bound, 10) and warning and "s reported 21 prompt + 11" in warning
    for bad in (Usage(-1, 0), Usage(0, -1)):
        with pytest.raises(LLMError, match="negative"):
            checked_usage(request, bad, "s")


def test_cost_is_zero_for_unknown_and_local_models() -> None:
    usage = Usage(1_000_000, 1_000_000)
    assert cost_usd(PRICES, "gpt-4o", usage) == pytest.approx(12.5)
    assert cost_usd(PRICES, "/models/local-dir", usage) == 0.0
    assert cost_usd({}, "gpt-4o", usage) == 0.0


def test_load_prices_from_yaml_and_reject_bad_entries(tmp_path: Path) -> None:
    good = tmp_path / "prices.yaml"
    good.write_text("gpt-4o: {input: 2.5, output: 10}\n")
    assert load_prices(good) == {"gpt-4o": Price(2.5, 10.0)}
    bad = tmp_path / "bad.json"
    bad.write_text('{"gpt-4o": {"input": 2.5}}')
    with pytest.raises(ConfigError, match="gpt-4o"):
        load_prices(bad)
    with pytest.raises(ConfigError):
        load_prices(tmp_path / "missing.yaml")


@given(st.text(max_size=200))
def test_estimate_never_below_a_byte_level_bpe_bound(text: str) -> None:
    # Byte-level BPE yields at most one token per byte; real text averages 3-4 bytes a token.
    assert estimate_tokens(text) * 2 >= len(text.encode())


def test_prompt_estimate_covers_the_template_overhead() -> None:
    request = ChatRequest(messages=(Message("system", ""), Message("user", "abcd")))
    assert estimate_prompt_tokens(request) == 8 + 8 + 8 + 2
