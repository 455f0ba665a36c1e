"""The recorded agent turns: references to repository lines rebuild the text exactly, and a
source whose mirror is absent is skipped, not an error."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from benchmarks import agent_turns_data as data

FILES = {
    "a.py": ["def f(x):\n", "    return x + 1\n", "\n", "class A:\n", "    pass\n", "x = 1\n"],
    "b.py": ["import os\n", "def f(x):\n", "    return x + 1\n", "\n"],
}
lines = st.sampled_from([*FILES["a.py"], *FILES["b.py"], "other\n", "partial", "    pass"])


@given(st.lists(lines, max_size=30))
def test_references_rebuild_the_text(parts: list[str]) -> None:
    text = "".join(parts)
    compressed = data.compress(text, FILES)
    assert data.expand(compressed, FILES) == text
    for part in compressed:  # only runs of >= 3 lines become references
        if isinstance(part, dict):
            assert part["ref"][2] >= data.MIN_RUN


def test_the_data_loads_and_skips_sources_without_a_mirror(tmp_path: Path) -> None:
    turns, skipped = data.load_turns(mirrors=tmp_path)  # no mirrors there
    assert set(skipped) == {"flask"}
    stages = {t.stage for t in turns}
    assert {"context", "testing", "editing", "selection"} <= stages
    assert all(t.source == "durations" and t.messages for t in turns)
