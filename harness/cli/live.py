"""The live view of a solve: one row per sample (stage, turns, last test result), totals."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from harness.report import dollars


@dataclass
class Row:
    stage: str = "waiting"
    turns: dict[str, int] = field(default_factory=dict)
    last: str = ""


class LiveView:
    """Receives orchestrator events (as its observer) and renders them for rich.Live."""

    def __init__(
        self,
        samples: int,
        usage: Callable[[], tuple[int, float]],
        unpriced: Sequence[str] = (),  # API models without a price: the cost is unknown
    ) -> None:
        self.unpriced = tuple(unpriced)
        self.rows = {f"sample-{i:02d}": Row() for i in range(samples)}
        self.run_stage = "starting"
        self.usage = usage
        self.start = time.monotonic()
        self.notes: list[str] = []

    def __call__(self, source: str, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if source == "run" or source == "selection":
            if kind == "stage":
                self.run_stage = str(event["stage"])
            elif kind == "budget":
                self.notes.append(str(event.get("message", "")))
            return
        row = self.rows.setdefault(source, Row())
        if kind == "stage":
            row.stage = str(event["stage"])
        elif kind == "llm":
            stage = str(event.get("stage"))
            row.turns[stage] = int(event.get("turn", 0))
        elif kind == "exec":
            result = event.get("result") or {}
            row.last = f"{event.get('what')}: exit {result.get('exit_code')}"

    def __rich__(self) -> RenderableType:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("sample", "stage", "testing", "editing", "last run"):
            table.add_column(column)
        styles = {"finished": "green", "error": "red", "budget": "yellow"}
        for name, row in sorted(self.rows.items()):
            table.add_row(
                name,
                Text(row.stage, style=styles.get(row.stage, "cyan")),
                str(row.turns.get("testing", "")),
                str(row.turns.get("editing", "")),
                row.last,
            )
        tokens, cost = self.usage()
        elapsed = time.monotonic() - self.start
        rate = tokens / elapsed if elapsed > 0 else 0.0
        footer = Text(
            f"{self.run_stage} · {elapsed:5.0f} s · {tokens:,} tokens "
            f"({rate:,.0f}/s) · {dollars(cost, self.unpriced)}",
            style="dim",
        )
        parts: list[RenderableType] = [table, footer]
        parts += [Text(note, style="yellow") for note in self.notes[-2:]]
        return Group(*parts)
