"""A scripted model for the `calc` projects of the tests (add() subtracts): it writes a
reproduction script, fixes add(), and picks the first candidate. Used through
`script:<this file>`; `make_responder` serves projects whose add() lives elsewhere."""

from __future__ import annotations

from collections.abc import Callable

from harness.llm.base import ChatRequest

TEST = "import sys\nfrom calc import add\nprint(add(2, 3))\nsys.exit(0 if add(2, 3) == 5 else 2)\n"


def make_responder(path: str) -> Callable[[ChatRequest], str]:
    """The oracle for a project whose add() lives in `path`."""
    edit = f"{path}\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"

    def respond(request: ChatRequest) -> str:
        system = request.messages[0].content
        turns = sum(1 for m in request.messages if m.role == "assistant")
        last = request.messages[-1].content
        if "Would a developer need to read or change" in last:
            return "RELEVANT"
        if "Order these files" in last:
            return path
        if "reproduces a reported issue" in system:
            return f"<test>\n{TEST}</test>" if turns == 0 else "<done/>"
        if "fixing an issue" in system:
            return f"<edit>\n{edit}</edit>" if turns == 0 else "<done/>"
        return "<choose>1</choose> It makes add() add."

    return respond


respond = make_responder("calc.py")
