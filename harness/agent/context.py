"""Which files matter: pre-ranking, model relevance filtering, model ranking, packing.

CodeMonkeys has a model read every non-test source file; on large repositories that is most
of a run's tokens, so a pre-ranking without model calls (`prerank.py`: what the issue names,
then BM25) picks the `max_candidates` files the model reads. Relevance verdicts are persisted
as they come (resume skips them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.agent.paths import is_test_path
from harness.agent.prerank import prerank
from harness.agent.render import render
from harness.config import ContextConfig
from harness.llm.base import LLM, ChatRequest, Message, Sampling
from harness.sandboxes import Sandbox
from harness.store import append_jsonl, read_jsonl
from harness.text import middle_truncate

SOURCE_SUFFIXES = {
    ".py",
    ".pyx",
    ".pyi",
    ".js",
    ".jsx",
    ".ts",
    ".tsx",
    ".go",
    ".rs",
    ".java",
    ".kt",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".hpp",
    ".rb",
    ".php",
    ".cs",
    ".scala",
    ".swift",
    ".m",
    ".sh",
}
CHARS_PER_TOKEN = 3.5


@dataclass(frozen=True)
class ContextFile:
    path: str
    content: str
    lexical: float
    relevant: bool | None = None  # None = not asked (or the answer was unreadable)
    note: str = ""


@dataclass(frozen=True)
class ContextResult:
    files: tuple[ContextFile, ...]  # ranked, most important first
    text: str  # packed file contents for prompts

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    def to_json(self) -> dict[str, Any]:
        """context.json: the chosen files (without their contents) and the packed text."""
        return {
            "files": [
                {
                    "path": f.path,
                    "relevant": f.relevant,
                    "note": f.note,
                    "lexical": round(f.lexical, 3),
                }
                for f in self.files
            ],
            "text": self.text,
        }


def tokens_estimate(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN) + 1


def is_candidate(path: str) -> bool:
    return Path(path).suffix in SOURCE_SUFFIXES and not is_test_path(path)


async def list_source_files(box: Sandbox) -> list[str]:
    res = await box.exec(["git", "-c", "safe.directory=*", "ls-files", "-z"], timeout=120)
    if not res.ok:
        return []
    return sorted(p for p in res.stdout.split("\0") if p and is_candidate(p))


class ContextFinder:
    def __init__(self, llm: LLM, config: ContextConfig, log_path: Path, program_id: str) -> None:
        self.llm = llm
        self.config = config
        self.log_path = log_path
        self.program_id = program_id

    async def find(self, box: Sandbox, issue: str) -> ContextResult:
        paths = await list_source_files(box)
        contents: dict[str, str] = {}
        for path in paths:
            try:
                contents[path] = await box.read_file(path)
            except Exception:  # unreadable (binary, permissions): not context material
                continue
        lexical = prerank(issue, contents)
        pool = list(lexical)[: self.config.max_candidates]
        files = [ContextFile(p, contents[p], lexical[p]) for p in pool]
        judged = False
        if self.config.relevance and files:
            files = await self._relevance(issue, files)
            relevant = [f for f in files if f.relevant]
            judged = bool(relevant)
            # No file called relevant: keep the lexical leaders among the unreadable verdicts
            # (the model said nothing usable about them), never a file it called irrelevant.
            files = relevant or [f for f in files if f.relevant is None][:5]
        if self.config.rankings > 0 and len(files) > 1 and (judged or not self.config.relevance):
            files = await self._rank(issue, files)
        return ContextResult(tuple(files), pack(files, self.config.token_budget))

    async def _relevance(self, issue: str, files: list[ContextFile]) -> list[ContextFile]:
        done = {r["path"]: r for r in read_jsonl(self.log_path) if r.get("kind") == "relevance"}
        sampling = Sampling(temperature=0.0, max_tokens=48)
        limit = self.config.max_file_tokens * CHARS_PER_TOKEN

        async def judge(f: ContextFile) -> ContextFile:
            if f.path in done:
                record = done[f.path]
            else:
                prompt = render(
                    "relevance",
                    issue=issue,
                    path=f.path,
                    content=middle_truncate(f.content, int(limit)),
                )
                reply = await self.llm.chat(
                    ChatRequest(
                        (Message("user", prompt),),
                        sampling,
                        program_id=f"{self.program_id}/ctx",
                        next_tool=None,
                    )
                )
                record = {
                    "kind": "relevance",
                    "path": f.path,
                    "verdict": verdict(reply.text),
                    "reply": reply.text,
                }
                append_jsonl(self.log_path, record)
            return ContextFile(
                f.path, f.content, f.lexical, record["verdict"], str(record["reply"]).strip()[:160]
            )

        return list(await asyncio.gather(*(judge(f) for f in files)))

    async def _rank(self, issue: str, files: list[ContextFile]) -> list[ContextFile]:
        prompt = render(
            "ranking", issue=issue, files=[{"path": f.path, "note": f.note} for f in files]
        )
        rankings: list[list[str]] = []
        for i in range(self.config.rankings):
            reply = await self.llm.chat(
                ChatRequest(
                    (Message("user", prompt),),
                    Sampling(temperature=0.0 if i == 0 else 0.5, max_tokens=400, seed=i),
                    program_id=f"{self.program_id}/rank",
                )
            )
            rankings.append(parse_ranking(reply.text, [f.path for f in files]))
            append_jsonl(
                self.log_path, {"kind": "ranking", "reply": reply.text, "order": rankings[-1]}
            )
        return merge_rankings(files, rankings)


def verdict(text: str) -> bool | None:
    head = text.strip().upper()
    irr = head.find("IRRELEVANT")
    rel = head.replace("IRRELEVANT", "").find("RELEVANT")
    if irr == -1 and rel == -1:
        return None
    if irr == -1:
        return True
    if rel == -1:
        return False
    return rel < irr


def parse_ranking(text: str, paths: list[str]) -> list[str]:
    order: list[str] = []
    for line in text.splitlines():
        for path in sorted(paths, key=len, reverse=True):
            if path in line and path not in order:
                order.append(path)
                break
    return order


def merge_rankings(files: list[ContextFile], rankings: Iterable[list[str]]) -> list[ContextFile]:
    """Mean rank over rankings; a file a ranking omits gets that ranking's last place + 1.
    Ties keep the previous (lexical) order."""
    rankings = list(rankings)
    position = {f.path: i for i, f in enumerate(files)}
    mean: dict[str, float] = {}
    for f in files:
        ranks = [r.index(f.path) if f.path in r else len(r) for r in rankings] or [0]
        mean[f.path] = sum(ranks) / len(ranks)
    return sorted(files, key=lambda f: (mean[f.path], position[f.path]))


def pack(files: Iterable[ContextFile], token_budget: int) -> str:
    """File contents in rank order until the budget is spent; the first one is always there."""
    parts: list[str] = []
    used = 0
    for f in files:
        block = f'<file path="{f.path}">\n{f.content.rstrip()}\n</file>'
        cost = tokens_estimate(block)
        if used + cost > token_budget:
            if parts:
                continue
            block = (
                f'<file path="{f.path}">\n'
                + middle_truncate(f.content, int(token_budget * CHARS_PER_TOKEN))
                + "\n</file>"
            )
            cost = token_budget
        parts.append(block)
        used += cost
    return "\n".join(parts)


def recall(selected: Iterable[str], gold: Iterable[str]) -> float:
    """Share of the gold files (those the reference patch touches) that were selected."""
    gold_set = set(gold)
    if not gold_set:
        return 1.0
    return len(gold_set & set(selected)) / len(gold_set)
