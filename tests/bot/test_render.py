"""What the bot's comments say about a run's cost."""

from __future__ import annotations

from pathlib import Path

from harness.bot.render import Links, no_patch
from harness.types import SolveResult


def test_a_comment_says_an_unpriced_models_cost_is_unknown() -> None:
    base = {"task_id": "t", "status": "no_patch", "patch": "", "run_dir": Path("runs/t")}
    unpriced = no_patch("k", SolveResult(**base, tokens=900, unpriced=("gpt-x",)), links=Links())
    assert "cost unknown (no price for gpt-x)" in unpriced and "$0" not in unpriced
    priced = no_patch("k", SolveResult(**base, tokens=900, cost_usd=0.5), links=Links())
    assert "$0.50" in priced and "unknown" not in priced
