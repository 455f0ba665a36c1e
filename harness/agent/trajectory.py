"""What every stage of a trajectory shares: its append-only log, replay on resume, and the
model conversation (scheduling hints, budget stops, trimming on context overflow).

Steps are recorded as they happen. On resume, a stage restarts from its last checkpoint and
any step recorded after it (a model reply, a test run) is replayed from the log instead of
being done again, so no step runs twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ContextTooLong
from harness.llm.base import LLM, ChatRequest, Message, Sampling
from harness.store import append_jsonl, read_jsonl
from harness.text import middle_truncate

Observer = Callable[[str, dict[str, Any]], None]  # (sample_id, event) -> None


@dataclass
class TrajectoryLog:
    """One trajectory's JSONL file, with the replay index of a previous run's steps."""

    path: Path
    sample_id: str
    observer: Observer | None = None
    seq: int = 0
    _steps: dict[tuple[str, int, str], dict[str, Any]] = field(default_factory=dict)
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path, sample_id: str, observer: Observer | None = None) -> TrajectoryLog:
        log = cls(path, sample_id, observer)
        for event in read_jsonl(path):
            log.seq = max(log.seq, int(event.get("seq", 0)))
            kind, stage = event.get("kind"), str(event.get("stage", ""))
            if kind == "checkpoint":
                log.checkpoints[stage] = event
            elif kind == "outcome":
                log.outcomes[stage] = event
            elif kind in ("llm", "exec"):
                key = (stage, int(event.get("turn", 0)), f"{kind}:{event.get('what', '')}")
                log._steps[key] = event
        return log

    def record(self, kind: str, stage: str, **data: Any) -> dict[str, Any]:
        self.seq += 1
        event = {"seq": self.seq, "kind": kind, "stage": stage, "time": time.time(), **data}
        append_jsonl(self.path, event)
        if kind == "checkpoint":
            self.checkpoints[stage] = event
        elif kind == "outcome":
            self.outcomes[stage] = event
        if self.observer is not None:
            self.observer(self.sample_id, event)
        return event

    def replayed(self, stage: str, turn: int, kind: str, what: str = "") -> dict[str, Any] | None:
        """A step recorded by an earlier run after this stage's last checkpoint."""
        event = self._steps.get((stage, turn, f"{kind}:{what}"))
        checkpoint = self.checkpoints.get(stage)
        if event is None or (checkpoint and event["seq"] < checkpoint["seq"]):
            return None
        return event


@dataclass
class Conversation:
    """A chat with the model for one stage of one trajectory."""

    llm: LLM
    log: TrajectoryLog
    stage: str
    program_id: str
    sampling: Sampling
    messages: list[Message] = field(default_factory=list)
    max_turns: int = 8
    turn: int = 0
    finish_reason: str | None = None  # of the last reply; "length" = cut off at max_tokens

    def add(self, role: str, content: str) -> None:
        self.messages.append(Message(role, content))  # type: ignore[arg-type]

    async def ask(self, next_tool: str) -> str:
        """The model's reply to the conversation so far (replayed when already recorded)."""
        self.turn += 1
        recorded = self.log.replayed(self.stage, self.turn, "llm")
        if recorded is not None:
            text = str(recorded["response"])
            self.finish_reason = recorded.get("finish_reason")
        else:
            response = await self._call(next_tool)
            text = response.text
            self.finish_reason = response.finish_reason
            self.log.record(
                "llm",
                self.stage,
                turn=self.turn,
                response=text,
                finish_reason=response.finish_reason,
                prompt_tokens=response.usage.prompt_tokens,
                completion_tokens=response.usage.completion_tokens,
                latency_s=round(response.latency_s, 3),
                cost_usd=response.cost_usd,
            )
        self.add("assistant", text)
        return text

    async def _call(self, next_tool: str) -> Any:
        messages = list(self.messages)
        for _ in range(8):
            request = ChatRequest(
                messages=tuple(messages),
                sampling=self.sampling,
                program_id=self.program_id,
                last_turn=self.turn >= self.max_turns,
                next_tool=next_tool,
            )
            try:
                return await self.llm.chat(request)
            except ContextTooLong:
                trimmed = _trim(messages)
                if trimmed is None:
                    raise
                messages = trimmed
        raise ContextTooLong("the conversation does not fit the model's window even trimmed")

    @property
    def cut(self) -> bool:
        """The last reply stopped at the token limit, so it may end mid-action."""
        return self.finish_reason == "length"

    def cut_note(self) -> str:
        return f"Your reply was cut off at the limit of {self.sampling.max_tokens} tokens per reply"

    def state(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.turn = int(state["turn"])
        self.messages = [Message(m["role"], m["content"]) for m in state["messages"]]


def _trim(messages: list[Message]) -> list[Message] | None:
    """Drop the oldest exchange after the first user message, else halve the longest one."""
    if len(messages) > 4:
        return messages[:2] + messages[4:]
    longest = max(range(len(messages)), key=lambda i: len(messages[i].content))
    text = messages[longest].content
    if len(text) < 200:
        return None
    out = list(messages)
    out[longest] = Message(out[longest].role, middle_truncate(text, len(text) // 2))
    return out
