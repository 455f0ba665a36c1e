"""report.md and the run summary: the issue and the patch stay inside their code blocks
whatever fences they hold (read back with a CommonMark parser), and a cost nobody can know
is not shown as $0."""

from __future__ import annotations

from markdown_it import MarkdownIt

from harness.agent.repro import TestRun as Run  # (not a pytest class)
from harness.llm.engine.spec_policy import SpecStats
from harness.report import RunSummary, SampleSummary, fenced, render_report
from harness.selectors.selection_loop import Selection
from harness.selectors.voting import Matrix, patch_key
from harness.types import Candidate, Task
from harness.types import TestScript as Script

ISSUE = """\
`parse` breaks on fenced examples.

```python
>>> parse("1.5h")
DurationError
```

The docs quote a fence in a fence:

````markdown
```python
x = 1
```
````

And a stray run of five: `````
"""
# A patch to a Markdown file holds fences of its own.
PATCH = """\
diff --git a/README.md b/README.md
--- a/README.md
+++ b/README.md
@@ -1,3 +1,4 @@
 ```python
-old()
+new()
 ```
+````
"""


def _matrix(candidate: Candidate) -> Matrix:
    matrix = Matrix()
    matrix.tests["sample-00"] = Script("import sys; sys.exit(0)")
    matrix.original["sample-00"] = Run(2, "broken")
    matrix.candidates[candidate.candidate_id] = candidate
    key = patch_key(candidate.patch)
    matrix.groups[key] = [candidate.candidate_id]
    matrix.cells[(key, "sample-00")] = Run(0, "fixed")
    return matrix


def _summary(**changes: object) -> RunSummary:
    base: dict[str, object] = {
        "task_id": "t-1",
        "status": "patched",
        "winner": "sample-00",
        "selected_by": "only-candidate",
        "test_verified": True,
        "tokens": 1234,
        "duration_s": 12.5,
        "timings_s": {"context": 1.0, "samples": 10.0},
        "samples": (SampleSummary("sample-00", "finished", testing_turns=2, editing_turns=3),),
    }
    return RunSummary(**{**base, **changes})  # type: ignore[arg-type]


def _report(summary: RunSummary, issue: str = ISSUE) -> str:
    winner = Candidate("sample-00", PATCH, Script("import sys; sys.exit(0)"), "sample-00")
    task = Task("t-1", issue, "/repo", "0123456789abcdef")
    selection = Selection(winner, "the only candidate left after voting", "only-candidate", 0)
    return render_report(task, summary, _matrix(winner), selection)


def test_an_issue_and_a_patch_with_code_fences_stay_in_their_blocks() -> None:
    tokens = MarkdownIt("commonmark").parse(_report(_summary()))
    blocks = [t for t in tokens if t.type == "fence"]
    assert [b.info for b in blocks] == ["text", "diff"], "a fence in the text closed a block"
    assert blocks[0].content == ISSUE.strip() + "\n"
    assert blocks[1].content == PATCH.rstrip() + "\n"
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == [
        "harness report: t-1",
        "Issue",
        "What was tried",
        "Votes",
        "The winner and why",
        "Cost",
    ]


def test_a_fence_is_longer_than_any_backtick_run() -> None:
    assert fenced("plain")[0] == "```"
    assert fenced("a ``` b", "text")[0] == "````text"
    assert fenced("a ```` b ``` c")[0] == "`````"
    assert fenced("ends with ```````")[-1] == "````````"


def test_the_cost_of_an_unpriced_api_model_is_unknown_not_zero() -> None:
    report = _report(_summary(unpriced=("gpt-mystery",)))
    assert "- cost: unknown (no price for gpt-mystery)" in report and "$0.0000" not in report
    assert "-c 'prices.gpt-mystery=[input, output]'" in report
    # A priced main model and an unpriced relevance model: a lower bound, said as such.
    mixed = _report(_summary(cost_usd=0.0123, unpriced=("gpt-mystery",)))
    assert "- cost: $0.0123 plus unknown (no price for gpt-mystery)" in mixed
    # In-process models cost nothing per token: $0 is the truth there.
    assert "- cost: $0.0000" in _report(_summary())


def test_summary_json_keeps_its_keys() -> None:
    """summary.json is written from the typed summary with the keys it always had."""
    spec = SpecStats("token", rounds=2, drafted=8, accepted=6, draft_tokens=6, target_tokens=4)
    data = _summary(speculation=spec, cost_usd=0.1234567).to_json()
    assert set(data) == {
        "task_id",
        "status",
        "winner",
        "selected_by",
        "test_verified",
        "tokens",
        "cost_usd",
        "duration_s",
        "timings_s",
        "samples",
        "message",
        "speculation",
    }
    assert data["cost_usd"] == 0.123457 and data["speculation"]["acceptance_rate"] == 0.75
    assert data["samples"][0] == {
        "sample_id": "sample-00",
        "status": "finished",
        "message": "",
        "testing_turns": 2,
        "reproduced": False,
        "editing_turns": 3,
        "editing_reason": None,
        "seconds": 0.0,
        "testing_seconds": 0.0,
    }
    assert _summary(unpriced=("m",)).to_json()["unpriced"] == ["m"]
