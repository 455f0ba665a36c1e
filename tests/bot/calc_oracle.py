"""A scripted model for the bot's `calc` project (add() subtracts): it writes a reproduction
script, fixes calc.py, and picks the first candidate. Used through `script:<this file>`."""

from __future__ import annotations

from harness.llm.base import ChatRequest

TEST = "import sys\nfrom calc import add\nprint(add(2, 3))\nsys.exit(0 if add(2, 3) == 5 else 2)\n"
EDIT = "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"


def respond(request: ChatRequest) -> str:
    system = request.messages[0].content
    turns = sum(1 for m in request.messages if m.role == "assistant")
    last = request.messages[-1].content
    if "Would a developer need to read or change" in last:
        return "RELEVANT"
    if "Order these files" in last:
        return "calc.py"
    if "reproduces a reported issue" in system:
        return f"<test>\n{TEST}</test>" if turns == 0 else "<done/>"
    if "fixing an issue" in system:
        return f"<edit>\n{EDIT}</edit>" if turns == 0 else "<done/>"
    return "<choose>1</choose> It makes add() add."
