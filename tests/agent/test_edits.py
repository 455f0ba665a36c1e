"""Search/replace blocks: parsing, exact and tolerant application, errors phrased for models."""

from __future__ import annotations

import pytest

from harness.agent.edits import EditBlock, EditError, apply_blocks, parse_edit, parse_edit_blocks

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


# A numpydoc docstring as sympy and numpy write them: section underlines indented in the
# docstring, and a module docstring whose title underline starts the line.
NUMPYDOC = '''"""
Utilities
=========

Helpers for iterables.
"""


def uniq(seq):
    """Yield unique elements of ``seq``.

    Parameters
    ==========

    seq : iterable

    Examples
    ========

    >>> list(uniq([1, 1, 2]))
    [1, 2]
    """
    seen = []
    for s in seq:
        if s not in seen:
            seen.append(s)
            yield s
'''


def test_indented_underlines_are_file_text_not_dividers() -> None:
    search = "    Examples\n    ========\n\n    >>> list(uniq([1, 1, 2]))\n    [1, 2]"
    replace = "    Examples\n    ========\n\n    >>> list(uniq([1, 1, 2, 3]))\n    [1, 2, 3]"
    (parsed,) = parse_edit_blocks(block("iterables.py", search, replace))
    assert (parsed.search, parsed.replace) == (search, replace)
    out = apply_blocks([parsed], {"iterables.py": NUMPYDOC})["iterables.py"]
    assert out == NUMPYDOC.replace("[1, 1, 2]))\n    [1, 2]", "[1, 1, 2, 3]))\n    [1, 2, 3]")
    compile(out, "iterables.py", "exec")


def test_an_underline_starting_its_line_is_resolved_against_the_file() -> None:
    # SEARCH quotes the module title and its column-0 underline: two lines of only '=' in
    # the block; the file says which one is text (it follows "Utilities" there).
    search = "Utilities\n=========\n\nHelpers for iterables."
    replace = "Utilities\n=========\n\nHelpers for iterables and sequences."
    (parsed,) = parse_edit_blocks(block("iterables.py", search, replace))
    assert len(parsed.readings) == 3  # one reading per '=' line
    out = apply_blocks([parsed], {"iterables.py": NUMPYDOC})["iterables.py"]
    assert out == NUMPYDOC.replace("for iterables.", "for iterables and sequences.")


def test_an_ambiguous_divider_is_an_observation_never_a_guess() -> None:
    # Renaming a title with an overline: "=========\nUtilities" -> "=========\nTools" reads
    # equally as replacing the title *and* its underline, so the model is asked to rephrase.
    source = "=========\nUtilities\n=========\n\nText.\n"
    text = block("doc.rst", "=========\nUtilities", "=========\nTools")
    with pytest.raises(EditError, match="more than one of them could be the divider"):
        apply_blocks(parse_edit_blocks(text), {"doc.rst": source})
    # With a line of context that is not only '=', the same edit is unambiguous.
    clear = block("doc.rst", "Utilities\n=========\n\nText.", "Tools\n=========\n\nText.")
    out = apply_blocks(parse_edit_blocks(clear), {"doc.rst": source})["doc.rst"]
    assert out == "=========\nTools\n=========\n\nText.\n"


def test_markers_count_only_alone_at_the_start_of_their_line() -> None:
    # A docstring quoting the edit format itself (as harness's own edits.py does).
    source = (
        'DOC = """\n    <<<<<<< SEARCH\n    old\n    =======\n    new\n    >>>>>>> REPLACE\n"""\n'
    )
    text = block("fmt.py", "    old\n    =======", "    old\n    ======= here")
    (parsed,) = parse_edit_blocks(text)
    assert parsed.search == "    old\n    ======="
    out = apply_blocks([parsed], {"fmt.py": source})["fmt.py"]
    assert "    ======= here\n    new" in out
    with pytest.raises(EditError, match="must start its line"):
        parse_edit_blocks("fmt.py\n  <<<<<<< SEARCH\nold\n  =======\nnew\n  >>>>>>> REPLACE")


def test_fences_and_form_feeds_inside_blocks_are_content() -> None:
    source = 'def f():\n    """\n    ```python\n    f()\n    ```\n    """\n\x0c\nX = 1\n'
    search = '    ```python\n    f()\n    ```\n    """\n\x0c\nX = 1'
    replace = '    ```python\n    f()  # call it\n    ```\n    """\n\x0c\nX = 2'
    text = "```\n" + block("f.py", search, replace) + "```\n"
    out = apply_blocks(parse_edit_blocks(text), {"f.py": source})["f.py"]
    assert out == source.replace("f()\n", "f()  # call it\n").replace("X = 1", "X = 2")


def test_deleting_lines_leaves_no_blank_line() -> None:
    out = apply_blocks(
        [EditBlock("calc.py", "def mul(a, b):\n    return a * b", "")], {"calc.py": SOURCE}
    )
    assert out["calc.py"] == "def add(a, b):\n    return a - b\n\n\n"


def test_an_unfinished_last_block_is_reported_and_the_complete_ones_kept() -> None:
    text = (
        block("calc.py", "    return a - b", "    return a + b")
        + "calc.py\n<<<<<<< SEARCH\n    return a * b\n===="
    )
    parsed = parse_edit(text)
    assert [b.search for b in parsed.blocks] == ["    return a - b"]
    assert parsed.unfinished == "block 2 (calc.py) ends before its >>>>>>> REPLACE line"
    with pytest.raises(EditError, match="no >>>>>>> REPLACE line before the next"):
        parse_edit("a.py\n<<<<<<< SEARCH\nx\n=======\ny\n" + block("b.py", "p", "q"))


def test_a_block_missing_its_search_marker_is_not_dropped() -> None:
    text = (
        block("calc.py", "    return a - b", "    return a + b")
        + "calc.py\n    return a * b\n=======\n    return b * a\n>>>>>>> REPLACE\n"
    )
    with pytest.raises(EditError, match="has no <<<<<<< SEARCH"):
        parse_edit_blocks(text)


def test_consecutive_blocks_may_omit_the_repeated_path() -> None:
    text = block("calc.py", "    return a - b", "    return a + b") + block(
        "", "    return a * b", "    return b * a"
    ).lstrip("\n")
    blocks = parse_edit_blocks(text)
    assert [b.path for b in blocks] == ["calc.py", "calc.py"]
