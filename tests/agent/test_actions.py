"""A model's turn becomes exactly one action, or an observation saying what went wrong."""

from __future__ import annotations

from harness.agent.actions import Action, Malformed, parse_action


def test_test_block_with_fence() -> None:
    action = parse_action(
        "Sure!\n<test>\n```python\nimport sys\nsys.exit(2)\n```\n</test>", ("test", "done")
    )
    assert action == Action("test", "import sys\nsys.exit(2)\n")


def test_done_variants() -> None:
    for text in ("<done/>", "<done>", "All good. </done>", "<DONE />"):
        assert parse_action(text, ("test", "done")) == Action("done")


def test_unclosed_tag_takes_the_rest() -> None:
    action = parse_action("<test>\nprint('x')\n", ("test", "done"))
    assert action == Action("test", "print('x')\n", closed=False)
    assert parse_action("<test>print(1)</test>", ("test", "done")) == Action("test", "print(1)\n")


def test_two_kinds_is_malformed() -> None:
    result = parse_action("<test>print(1)</test> and <done/>", ("test", "done"))
    assert isinstance(result, Malformed) and "exactly one" in result.message


def test_nothing_is_malformed_and_lists_choices() -> None:
    result = parse_action("I think the bug is in parse.py", ("edit", "test", "done"))
    assert isinstance(result, Malformed)
    assert "<edit>" in result.message and "<done/>" in result.message


def test_bare_code_block_counts_as_a_test_in_the_testing_stage_only() -> None:
    text = "```python\nprint(1)\n```"
    assert parse_action(text, ("test", "done")) == Action("test", "print(1)\n")
    assert isinstance(parse_action(text, ("edit", "test", "done")), Malformed)


def test_empty_test_is_malformed() -> None:
    assert isinstance(parse_action("<test>   </test>", ("test", "done")), Malformed)


def test_choose() -> None:
    assert parse_action("<choose>2</choose> because", ("test", "choose")) == Action("choose", "2")
