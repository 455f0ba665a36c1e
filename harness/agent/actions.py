"""Parsing a model's turn into one action: <test>, <edit>, <done/>, <choose>N</choose>.

Malformed output never raises past this module: it becomes `Malformed(message)`, which the
stage shows the model as its next observation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TAGS = ("test", "edit", "choose")
_DONE = re.compile(r"<\s*/?\s*done\s*/?\s*>", re.IGNORECASE)
_FENCED = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Action:
    kind: str  # "test" | "edit" | "done" | "choose"
    body: str = ""
    closed: bool = True  # False: the closing tag is missing (stop string, or a cut reply)


@dataclass(frozen=True)
class Malformed:
    message: str


def _tag_body(text: str, tag: str) -> tuple[str, bool] | None:
    """The body of `<tag>...</tag>` and whether the closing tag was there."""
    match = re.search(rf"<\s*{tag}\s*>(.*?)<\s*/\s*{tag}\s*>", text, re.DOTALL | re.IGNORECASE)
    if match:
        return match.group(1), True
    # An opening tag whose closing tag was cut off (stop strings, max_tokens): take the rest.
    match = re.search(rf"<\s*{tag}\s*>(.*)$", text, re.DOTALL | re.IGNORECASE)
    return (match.group(1), False) if match else None


def strip_fences(code: str) -> str:
    fenced = _FENCED.search(code)
    body = fenced.group(1) if fenced else code
    return body.strip("\n") + "\n"


def parse_action(text: str, allowed: tuple[str, ...]) -> Action | Malformed:
    """The single action in `text` among `allowed` kinds."""
    found: list[Action] = []
    for tag in _TAGS:
        if tag not in allowed:
            continue
        tagged = _tag_body(text, tag)
        if tagged is not None:
            found.append(Action(tag, *tagged))
    if "done" in allowed and _DONE.search(text):
        found.append(Action("done"))
    kinds = sorted({a.kind for a in found})
    if len(kinds) > 1:
        return Malformed(
            f"your reply contains {' and '.join(kinds)}; reply with exactly one of "
            + ", ".join(_describe(k) for k in allowed)
        )
    if found:
        action = found[0]
        if action.kind == "test":
            code = strip_fences(action.body)
            if not code.strip():
                return Malformed(
                    "the <test> block is empty; put a complete Python script inside it"
                )
            return Action("test", code, action.closed)
        return action
    if "test" in allowed and "edit" not in allowed:
        fenced = _FENCED.search(text)
        if fenced and fenced.group(1).strip():  # a bare code block is a test script
            return Action("test", fenced.group(1).strip("\n") + "\n")
    return Malformed(
        "no action found; reply with exactly one of " + ", ".join(_describe(k) for k in allowed)
    )


def _describe(kind: str) -> str:
    return {
        "test": "<test>a complete Python script</test>",
        "edit": "<edit>search/replace blocks</edit>",
        "done": "<done/>",
        "choose": "<choose>candidate number</choose>",
    }[kind]
