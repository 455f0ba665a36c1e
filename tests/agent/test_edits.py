"""Search/replace blocks: parsing, exact and tolerant application, errors phrased for models."""

from __future__ import annotations

import pytest

from harness.agent.edits import EditBlock, EditError, apply_blocks, parse_edit_blocks

SOURCE = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"


def block(path: str, search: str, replace: str) -> str:
    return f"{path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_parse_several_blocks_with_fences_and_decorated_paths() -> None:
    text = (
        "Here is the fix:\n```python\n"
        + block("`calc.py`", "    return a - b", "    return a + b")
        + "```\n"
        + block("File: ./pkg/new.py", "", "X = 1")
    )
    blocks = parse_edit_blocks(text)
    assert blocks == [
        EditBlock("calc.py", "    return a - b", "    return a + b"),
        EditBlock("pkg/new.py", "", "X = 1"),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("just words", "no SEARCH/REPLACE block"),
        (block("/etc/passwd", "a", "b"), "relative to the repository root"),
        (block("../outside.py", "a", "b"), "relative to the repository root"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(EditError, match=message):
        parse_edit_blocks(text)


def test_exact_replace_and_create() -> None:
    blocks = parse_edit_blocks(
        block("calc.py", "    return a - b", "    return a + b") + block("new.py", "", "Y = 2")
    )
    out = apply_blocks(blocks, {"calc.py": SOURCE, "new.py": None})
    assert "return a + b" in out["calc.py"] and out["new.py"] == "Y = 2\n"


def test_tolerates_indentation_and_trailing_whitespace() -> None:
    # The model quoted a method body without its indentation, with trailing spaces.
    source = "class C:\n    def f(self):\n        x = 1\n        return x\n"
    blocks = [EditBlock("c.py", "def f(self):   \n    x = 1", "def f(self):\n    x = 2")]
    out = apply_blocks(blocks, {"c.py": source})["c.py"]
    assert out == "class C:\n    def f(self):\n        x = 2\n        return x\n"


@pytest.mark.parametrize(
    "search, files, message",
    [
        ("    return a / b", {"calc.py": SOURCE}, "not found"),
        ("    return a", {"calc.py": SOURCE}, "occurs 2 times"),
        ("anything", {"calc.py": None}, "does not exist"),
        ("", {"calc.py": SOURCE}, "SEARCH is empty"),
    ],
)
def test_apply_errors(search: str, files: dict[str, str | None], message: str) -> None:
    with pytest.raises(EditError, match=message):
        apply_blocks([EditBlock("calc.py", search, "x")], files)


def test_not_found_points_at_the_nearest_line() -> None:
    with pytest.raises(EditError, match="line 2"):
        apply_blocks([EditBlock("calc.py", "    return a - b\n    pass", "x")], {"calc.py": SOURCE})


def test_blocks_on_one_file_apply_in_order() -> None:
    blocks = [
        EditBlock("calc.py", "return a - b", "return a + b"),
        EditBlock("calc.py", "return a + b", "return b + a"),
    ]
    assert "return b + a" in apply_blocks(blocks, {"calc.py": SOURCE})["calc.py"]
