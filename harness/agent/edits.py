"""The edit format (search/replace blocks) and applying it to file contents.

    path/to/file.py
    <<<<<<< SEARCH
    exact lines to find
    =======
    lines to put instead
    >>>>>>> REPLACE

An empty SEARCH creates a file (or appends to an empty one). Applying is pure: it maps old
contents to new contents or returns a message the model sees next turn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_BLOCK = re.compile(
    r"(?P<path>[^\n]*)\n\s*<{5,9} ?SEARCH[^\n]*\n(?P<search>.*?)\n?={5,9}[ \t]*\n"
    r"(?P<replace>.*?)\n?>{5,9} ?REPLACE[^\n]*",
    re.DOTALL,
)
_FENCE = re.compile(r"^```[\w+-]*\s*$")


@dataclass(frozen=True)
class EditBlock:
    path: str
    search: str
    replace: str


class EditError(Exception):
    """A problem with the model's edit, phrased for the model."""


def parse_edit_blocks(text: str) -> list[EditBlock]:
    """All search/replace blocks in `text`; EditError when there are none or a path is bad."""
    lines = [line for line in text.splitlines() if not _FENCE.match(line.strip())]
    cleaned = "\n".join(lines)
    blocks = []
    for match in _BLOCK.finditer(cleaned):
        path = _clean_path(match.group("path"))
        if not path:
            raise EditError(
                "each SEARCH/REPLACE block must be preceded by a line with the file path"
            )
        if path.startswith("/") or ".." in path.split("/"):
            raise EditError(f"use a path relative to the repository root, not {path!r}")
        blocks.append(EditBlock(path, match.group("search"), match.group("replace")))
    if not blocks:
        raise EditError(
            "no SEARCH/REPLACE block found; write the file path on its own line, then "
            "<<<<<<< SEARCH, the exact lines to replace, =======, the new lines, >>>>>>> REPLACE"
        )
    return blocks


def _clean_path(raw: str) -> str:
    path = raw.strip().strip("`*'\"").strip()
    for prefix in ("File:", "file:", "Path:", "path:", "#"):
        if path.startswith(prefix):
            path = path[len(prefix) :].strip()
    return path.removeprefix("./")


def apply_blocks(blocks: list[EditBlock], files: Mapping[str, str | None]) -> dict[str, str]:
    """New contents of every touched file. `files[path]` is None for a missing file."""
    out: dict[str, str] = {}
    for number, block in enumerate(blocks, 1):
        current = out.get(block.path, files.get(block.path))
        where = f"block {number} ({block.path})"
        if current is None:
            if block.search.strip():
                raise EditError(
                    f"{where}: the file does not exist; to create it, leave SEARCH empty"
                )
            out[block.path] = _with_newline(block.replace)
            continue
        if not block.search.strip():
            if current.strip():
                raise EditError(
                    f"{where}: SEARCH is empty but the file is not; quote the lines to replace"
                )
            out[block.path] = _with_newline(block.replace)
            continue
        out[block.path] = _replace_once(current, block, where)
    return out


def _replace_once(content: str, block: EditBlock, where: str) -> str:
    count = content.count(block.search)
    if count == 1:
        return content.replace(block.search, block.replace, 1)
    if count > 1:
        raise EditError(
            f"{where}: the SEARCH text occurs {count} times; include more lines to make it unique"
        )
    # Tolerate differences in trailing whitespace and in the indentation of the whole block.
    found = _fuzzy_find(content, block.search)
    if found is None:
        hint = _closest_line(content, block.search)
        raise EditError(f"{where}: the SEARCH text was not found in the file" + hint)
    start, end, indent = found
    replace = "\n".join(
        indent + line if line else line for line in _dedent(block.replace).split("\n")
    )
    lines = content.split("\n")
    return "\n".join([*lines[:start], replace, *lines[end:]])


def _dedent(text: str) -> str:
    lines = text.split("\n")
    widths = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(widths, default=0)
    return "\n".join(line[cut:] for line in lines)


def _fuzzy_find(content: str, search: str) -> tuple[int, int, str] | None:
    want = [line.rstrip() for line in _dedent(search).strip("\n").split("\n")]
    lines = content.split("\n")
    hits = []
    for start in range(len(lines) - len(want) + 1):
        window = lines[start : start + len(want)]
        first = window[0]
        indent = first[: len(first) - len(first.lstrip())]
        if all(
            (have.rstrip() == (indent + w if w else ""))
            for have, w in zip(window, want, strict=True)
        ):
            hits.append((start, start + len(want), indent))
    return hits[0] if len(hits) == 1 else None


def _closest_line(content: str, search: str) -> str:
    first = next((line.strip() for line in search.split("\n") if line.strip()), "")
    if not first:
        return ""
    for number, line in enumerate(content.split("\n"), 1):
        if first in line:
            return (
                f"; its first line appears at line {number}: {line.strip()!r}; "
                "check the lines after it"
            )
    return ""


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") or not text else text + "\n"
