"""A scripted model for the bundled `durations` example: it plays every role of a solve run
the way a capable model would, so the whole pipeline can be watched end to end without one.

    harness solve examples/durations.issue.md --repo examples/durations \
        --model script:examples/scripted/durations_oracle.py

Samples differ on purpose (sample-01 and sample-03 propose wrong fixes) so that voting and
selection have something to choose between. `respond(request)` is the whole interface.
"""

from __future__ import annotations

from harness.llm.base import ChatRequest

TEST = """\
import sys
from durations import DurationError, parse_duration

cases = {"1.5h": 5400.0, "2h 0.5m": 7230.0, "1h30m": 5400.0}
ok = True
for text, expected in cases.items():
    try:
        got = parse_duration(text)
    except DurationError as exc:
        got = "DurationError: %s" % exc
    print("%r -> %r (expected %r)" % (text, got, expected))
    ok = ok and got == expected
sys.exit(0 if ok else 2)
"""

RIGHT = """\
durations/parse.py
<<<<<<< SEARCH
_COMPONENT = re.compile(r"(\\d+)\\s*([a-zA-Z]+)")
=======
_COMPONENT = re.compile(r"(\\d*\\.?\\d+)\\s*([a-zA-Z]+)")
>>>>>>> REPLACE
durations/parse.py
<<<<<<< SEARCH
        total += int(match.group(1)) * SECONDS[unit]
=======
        total += float(match.group(1)) * SECONDS[unit]
>>>>>>> REPLACE
"""

# Accepts the syntax but still truncates the number: "1.5h" becomes one hour.
HALF_RIGHT = """\
durations/parse.py
<<<<<<< SEARCH
_COMPONENT = re.compile(r"(\\d+)\\s*([a-zA-Z]+)")
=======
_COMPONENT = re.compile(r"(\\d*\\.?\\d+)\\s*([a-zA-Z]+)")
>>>>>>> REPLACE
durations/parse.py
<<<<<<< SEARCH
        total += int(match.group(1)) * SECONDS[unit]
=======
        total += int(float(match.group(1))) * SECONDS[unit]
>>>>>>> REPLACE
"""

# Special-cases the examples from the issue instead of fixing the parser.
HARDCODED = """\
durations/parse.py
<<<<<<< SEARCH
    if isinstance(text, (int, float)):
=======
    if text in ("1.5h", "2h 0.5m"):
        return {"1.5h": 5400.0, "2h 0.5m": 7230.0}[text]
    if isinstance(text, (int, float)):
>>>>>>> REPLACE
"""

SELECTION_TEST = """\
import sys
from durations import parse_duration
try:
    ok = parse_duration("0.25d") == 21600.0 and parse_duration("1.5 hours") == 5400.0
except Exception as exc:
    print("error:", exc)
    ok = False
print("ok" if ok else "wrong")
sys.exit(0 if ok else 2)
"""


def _sample(request: ChatRequest) -> int:
    pid = request.program_id or ""
    return int(pid.rsplit("sample-", 1)[1]) if "sample-" in pid else 0


def respond(request: ChatRequest) -> str:
    system = request.messages[0].content if request.messages else ""
    turns = sum(1 for m in request.messages if m.role == "assistant")
    last = request.messages[-1].content
    if "Would a developer need to read or change" in last:
        return "RELEVANT: it parses durations." if "parse.py" in last else "IRRELEVANT."
    if "Order these files" in last:
        return "durations/parse.py\ndurations/units.py\n"
    if "reproduces a reported issue" in system:  # testing stage
        return f"<test>\n{TEST}</test>" if turns == 0 else "<done/>"
    if "fixing an issue" in system:  # editing stage
        if turns == 0:
            edit = {1: HALF_RIGHT, 3: HARDCODED}.get(_sample(request), RIGHT)
            return f"<edit>\n{edit}</edit>"
        return "<done/>"
    if "choosing the best of several candidate patches" in system:
        if turns == 0:
            return f"<test>\n{SELECTION_TEST}</test>"
        ranked = [part for part in request.messages[1].content.split("<candidate number=")[1:]]
        for number, text in enumerate(ranked, 1):
            if "float(match.group(1))" in text and "int(float" not in text:
                return (
                    f"<choose>{number}</choose> Candidate {number} parses fractional "
                    "components for every unit instead of special-casing the examples."
                )
        return "<choose>1</choose>"
    return "<done/>"
