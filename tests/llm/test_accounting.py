"""Prices, costs and token estimates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import ConfigError
from harness.llm.accounting import (
    Price,
    cost_usd,
    estimate_prompt_tokens,
    estimate_tokens,
    load_prices,
    price_for,
)
from harness.llm.base import ChatRequest, Message, Usage

PRICES = {"gpt-4o": Price(2.5, 10.0), "gpt-4o-mini": Price(0.15, 0.6)}


def test_price_lookup_exact_prefixed_and_dated() -> None:
    assert price_for(PRICES, "gpt-4o") == Price(2.5, 10.0)
    assert price_for(PRICES, "openai/gpt-4o-mini") == Price(0.15, 0.6)
    assert price_for(PRICES, "gpt-4o-mini-2024-07-18") == Price(0.15, 0.6)
    assert price_for(PRICES, "smollm2-135m") is None


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
