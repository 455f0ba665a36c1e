"""Event payloads and the `/harness solve` command: what is acted on, what is ignored, and
which options pass the allow-list."""

from __future__ import annotations

from typing import Any

import pytest

from harness.bot.events import (
    CommandError,
    Ignored,
    OptionLimits,
    SolveOptions,
    Trigger,
    find_command,
    parse_command,
    parse_event,
)
from harness.errors import ConfigError
from tests.bot.conftest import comment_event, label_event
from tests.bot.ghserver import FakeGitHub


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/harness solve", SolveOptions()),
        ("/harness solve --samples 4", SolveOptions(samples=4)),
        ("/harness solve --samples=8 --max-usd 2.5", SolveOptions(samples=8, budget_usd=2.5)),
        ("/harness solve --budget-usd=2.5", SolveOptions(budget_usd=2.5)),  # the old name
        ("/harness solve --model 'openai:gpt-4o-mini'", SolveOptions(model="openai:gpt-4o-mini")),
        (
            "/harness solve --model hf:HuggingFaceTB/SmolLM2-135M-Instruct --budget-usd $3",
            SolveOptions(model="hf:HuggingFaceTB/SmolLM2-135M-Instruct", budget_usd=3.0),
        ),
    ],
)
def test_valid_commands(line: str, expected: SolveOptions) -> None:
    listed = ("openai:gpt-4o-mini", "hf:HuggingFaceTB/SmolLM2-135M-Instruct")
    assert parse_command(line, OptionLimits(allowed_models=listed)) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/harness fix", "unknown command"),
        ("/harness", "unknown command"),
        ("/harness solve --samples 4; rm -rf /", "unknown option"),
        ("/harness solve --samples $(id)", "whole number"),
        ("/harness solve --samples 17", "from 1 to 16"),
        ("/harness solve --samples 0", "from 1 to 16"),
        ("/harness solve --samples -3", "whole number"),
        ("/harness solve --max-usd nan", "above 0"),
        ("/harness solve --max-usd inf", "above 0"),
        ("/harness solve --max-usd 21", "--max-usd must be a number above 0 and at most 20"),
        ("/harness solve --budget-usd 21", "at most 20"),
        ("/harness solve --max-usd 2 --budget-usd 3", "`--max-usd` is given twice"),
        ("/harness solve --model 'a b'", "not a model spec"),
        ("/harness solve --model '$(curl evil)'", "not a model spec"),
        ("/harness solve --samples 2 --samples 3", "given twice"),
        ("/harness solve --model", "needs a value"),
        ("/harness solve --model 'unterminated", "cannot parse"),
        ("/harness solve --api-key sk-123", "unknown option"),
    ],
)
def test_rejected_commands(line: str, message: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(line)
    assert message in info.value.message
    assert isinstance(info.value, ConfigError)


def test_model_allow_list() -> None:
    limits = OptionLimits(allowed_models=("openai:gpt-4o",))
    assert parse_command("/harness solve --model openai:gpt-4o", limits).model == "openai:gpt-4o"
    with pytest.raises(CommandError, match="not allowed here"):
        parse_command("/harness solve --model openai:o3", limits)
    with pytest.raises(CommandError, match="lets no comment choose the model"):
        parse_command("/harness solve --model openai:gpt-4o")  # no list: no choice


def test_find_command_takes_the_first_command_line() -> None:
    body = "Thanks!\n\n  /harness solve --samples 2\n/harness solve --samples 9\n"
    assert find_command(body) == "/harness solve --samples 2"
    assert find_command("see /harness solve in the docs") is None
    assert find_command("/harnessing the power") is None


def test_options_merge_keeps_workflow_defaults() -> None:
    defaults = SolveOptions(samples=4, model="m", budget_usd=5.0)
    assert defaults.merged(SolveOptions(samples=8)) == SolveOptions(8, "m", 5.0)
    assert defaults.merged(SolveOptions()) == defaults


def test_label_event(github: FakeGitHub) -> None:
    trigger = parse_event("issues", label_event(github, label="Harness"))
    assert isinstance(trigger, Trigger)
    assert (trigger.kind, trigger.actor, trigger.association) == ("label", "maintainer", None)
    assert trigger.repo == "octo/calc" and trigger.issue.number == 7
    # Same payload (a re-delivery) -> same key; a later labeling -> a new key.
    again = parse_event("issues", label_event(github))
    later = parse_event("issues", label_event(github, updated_at="2024-06-01T00:00:00Z"))
    assert isinstance(again, Trigger) and isinstance(later, Trigger)
    assert again.key == trigger.key != later.key


def test_comment_event(github: FakeGitHub) -> None:
    payload = comment_event(github, "/harness solve --samples 3", association="COLLABORATOR")
    trigger = parse_event("issue_comment", payload)
    assert isinstance(trigger, Trigger)
    assert trigger.association == "COLLABORATOR" and trigger.options == SolveOptions(samples=3)
    assert trigger.key == f"comment-{payload['comment']['id']}" and trigger.problem is None


def test_bad_command_becomes_a_problem_to_answer(github: FakeGitHub) -> None:
    trigger = parse_event("issue_comment", comment_event(github, "/harness solve --samples 99"))
    assert isinstance(trigger, Trigger) and "from 1 to 16" in (trigger.problem or "")


def test_commands_on_pull_requests_are_answered(github: FakeGitHub) -> None:
    payload = comment_event(github, "/harness solve")
    payload["issue"]["pull_request"] = {"url": "https://api.github.com/repos/octo/calc/pulls/7"}
    trigger = parse_event("issue_comment", payload)
    assert isinstance(trigger, Trigger) and "not a PR" in (trigger.problem or "")


def _ignored(name: str, payload: dict[str, Any]) -> str:
    result = parse_event(name, payload)
    assert isinstance(result, Ignored)
    return result.reason


def test_ignored_events(github: FakeGitHub) -> None:
    assert "only labeled" in _ignored("issues", {**label_event(github), "action": "opened"})
    assert "is not 'harness'" in _ignored("issues", label_event(github, label="bug"))
    assert "no /harness command" in _ignored("issue_comment", comment_event(github, "lgtm"))
    edited = {**comment_event(github, "/harness solve"), "action": "edited"}
    assert "only created" in _ignored("issue_comment", edited)
    from_bot = comment_event(github, "/harness solve")
    from_bot["comment"]["user"]["type"] = "Bot"
    assert "bots" in _ignored("issue_comment", from_bot)
    assert "not handled" in _ignored("push", {"ref": "refs/heads/main"})


def test_malformed_payload_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="malformed issues event"):
        parse_event("issues", {"action": "labeled", "label": {"name": "harness"}})
