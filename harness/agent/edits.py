"""The edit format (search/replace blocks) and applying it to file contents.

    path/to/file.py
    <<<<<<< SEARCH
    exact lines to find
    =======
    lines to put instead
    >>>>>>> REPLACE

Markers count only alone on their line, from its first column: an indented `    =======` (a
numpydoc underline) is file text. An empty SEARCH creates a file (or fills an empty one).
Applying is pure: it maps old contents to new contents or raises a message for the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_SEARCH = re.compile(r"<{5,9} ?SEARCH")
_DIVIDER = re.compile(r"={5,9}")
_REPLACE = re.compile(r">{5,9} ?REPLACE")
_FENCE = re.compile(r"```[\w+-]*")
FORMAT_HINT = (
    "write the file path on its own line, then <<<<<<< SEARCH, the exact lines to replace, "
    "=======, the new lines, >>>>>>> REPLACE, each marker alone on its line from the first column"
)


@dataclass(frozen=True)
class EditBlock:
    path: str
    search: str
    replace: str
    # A block with several lines of only '=' has one reading per such line, (search, divider,
    # replace) each; applying keeps the one the file supports (see `_resolve`).
    readings: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class ParsedEdit:
    blocks: tuple[EditBlock, ...]  # the complete blocks, in order
    unfinished: str | None = None  # a block that never reached >>>>>>> REPLACE (reply cut off)


class EditError(Exception):
    """A problem with the model's edit, phrased for the model."""


def _is(marker: re.Pattern[str], line: str) -> bool:
    return marker.fullmatch(line.rstrip()) is not None


def parse_edit(text: str) -> ParsedEdit:
    """The blocks in `text`. EditError for a malformed block; a last block left open (a reply
    cut off by the token limit) is reported in `unfinished`, the blocks before it are kept."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    blocks: list[EditBlock] = []
    path_line: str | None = None  # the last non-blank line outside blocks
    i = 0
    while i < len(lines):
        line = lines[i]
        if not _is(_SEARCH, line):
            if _is(_REPLACE, line):  # a block whose SEARCH marker is missing
                raise EditError(
                    f"a >>>>>>> REPLACE line after block {len(blocks)} has no <<<<<<< SEARCH "
                    "line before it; every block starts with <<<<<<< SEARCH"
                )
            if line.strip() and not _FENCE.fullmatch(line.strip()):
                path_line = line
            i += 1
            continue
        number = len(blocks) + 1
        path = _block_path(path_line, blocks, number)
        path_line = None
        body: list[str] = []
        i += 1
        while i < len(lines) and not _is(_REPLACE, lines[i]):
            if _is(_SEARCH, lines[i]):
                raise EditError(
                    f"block {number} ({path}) has no >>>>>>> REPLACE line before the next "
                    "<<<<<<< SEARCH"
                )
            body.append(lines[i])
            i += 1
        if i == len(lines):
            return ParsedEdit(
                tuple(blocks), f"block {number} ({path}) ends before its >>>>>>> REPLACE line"
            )
        blocks.append(_split(path, body, number))
        i += 1
    if not blocks:
        indented = any(_is(_SEARCH, line.strip()) for line in lines)
        raise EditError(
            "no SEARCH/REPLACE block found"
            + ("; the <<<<<<< SEARCH marker must start its line" if indented else "")
            + f"; {FORMAT_HINT}"
        )
    return ParsedEdit(tuple(blocks))


def parse_edit_blocks(text: str) -> list[EditBlock]:
    """The complete blocks of `text`; EditError when there are none or one is malformed."""
    return list(parse_edit(text).blocks)


def _block_path(raw: str | None, blocks: list[EditBlock], number: int) -> str:
    if raw is None:
        if blocks:  # consecutive blocks on one file may omit the path (as aider's format)
            return blocks[-1].path
        raise EditError("each SEARCH/REPLACE block must be preceded by a line with the file path")
    path = _clean_path(raw)
    if not path:
        raise EditError(f"block {number} has no file path on the line before <<<<<<< SEARCH")
    if path.startswith("/") or ".." in path.split("/"):
        raise EditError(f"use a path relative to the repository root, not {path!r}")
    return path


def _clean_path(raw: str) -> str:
    path = raw.strip().strip("`*'\"").strip()
    for prefix in ("File:", "file:", "Path:", "path:", "#"):
        if path.startswith(prefix):
            path = path[len(prefix) :].strip()
    return path.removeprefix("./")


def _split(path: str, body: list[str], number: int) -> EditBlock:
    dividers = [j for j, line in enumerate(body) if _is(_DIVIDER, line)]
    if not dividers:
        raise EditError(f"block {number} ({path}) has no ======= line between SEARCH and REPLACE")
    readings = tuple(("\n".join(body[:j]), body[j], "\n".join(body[j + 1 :])) for j in dividers)
    search, _, replace = readings[0]
    return EditBlock(path, search, replace, readings if len(readings) > 1 else ())


def apply_blocks(blocks: list[EditBlock], files: Mapping[str, str | None]) -> dict[str, str]:
    """New contents of every touched file. `files[path]` is None for a missing file."""
    out: dict[str, str] = {}
    for number, block in enumerate(blocks, 1):
        current = out.get(block.path, files.get(block.path))
        where = f"block {number} ({block.path})"
        search, replace = block.search, block.replace
        if block.readings and current is not None:
            search, replace = _resolve(current, block.readings, where)
        if current is None:
            if search.strip():
                raise EditError(
                    f"{where}: the file does not exist; to create it, leave SEARCH empty"
                )
            out[block.path] = _with_newline(replace)
            continue
        if not search.strip():
            if current.strip():
                raise EditError(
                    f"{where}: SEARCH is empty but the file is not; quote the lines to replace"
                )
            out[block.path] = _with_newline(replace)
            continue
        out[block.path] = _replace_once(current, search, replace, where)
    return out


def _resolve(
    content: str, readings: tuple[tuple[str, str, str], ...], where: str
) -> tuple[str, str]:
    """The one reading of a block with several '=' lines that the file supports.

    A reading is possible when its SEARCH occurs exactly once. A '=' line that the file has
    right after that SEARCH, followed by the block's next line too, is file text (an RST or
    docstring underline quoted in SEARCH), not the divider. Anything left ambiguous is
    reported, never guessed."""

    def is_text(search: str, line: str, replace: str) -> bool:
        after = replace.split("\n", 1)[0]
        return bool(replace) and _count(content, "\n".join((search, line, after))) > 0

    possible = [r for r in readings if r[0].strip() and _count(content, r[0]) == 1]
    likely = [r for r in possible if not is_text(*r)]
    chosen = likely or possible
    if len(chosen) == 1:
        return chosen[0][0], chosen[0][2]
    count = len(readings)
    if not chosen:
        # None fits: report the first reading's problem (the most likely intent).
        return readings[0][0], readings[0][2]
    raise EditError(
        f"{where}: the block has {count} lines of only '=' characters and more than one "
        "of them could be the divider; start and end SEARCH and REPLACE with a line that is "
        "not only '=' (quote one more line of context), so that the ======= divider is the only "
        "such line next to them"
    )


def _count(content: str, search: str) -> int:
    exact = content.count(search)
    return exact if exact else len(_fuzzy_hits(content, search))


def _replace_once(content: str, search: str, replace: str, where: str) -> str:
    count = content.count(search)
    if count == 1:
        start = content.index(search)
        end = start + len(search)
        # Deleting whole lines deletes their line breaks too (no blank line left behind).
        if (
            not replace
            and content[end : end + 1] == "\n"
            and content[start - 1 : start] in ("", "\n")
        ):
            end += 1
        return content[:start] + replace + content[end:]
    if count > 1:
        raise EditError(
            f"{where}: the SEARCH text occurs {count} times; include more lines to make it unique"
        )
    # Tolerate differences in trailing whitespace and in the indentation of the whole block.
    hits = _fuzzy_hits(content, search)
    if len(hits) > 1:
        raise EditError(
            f"{where}: the SEARCH text occurs {len(hits)} times (ignoring indentation); "
            "include more lines to make it unique"
        )
    if not hits:
        hint = _closest_line(content, search)
        raise EditError(f"{where}: the SEARCH text was not found in the file" + hint)
    start, end, indent = hits[0]
    lines = content.split("\n")
    if not replace:
        return "\n".join([*lines[:start], *lines[end:]])
    new = [indent + line if line else line for line in _dedent(replace).split("\n")]
    return "\n".join([*lines[:start], *new, *lines[end:]])


def _dedent(text: str) -> str:
    lines = text.split("\n")
    widths = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(widths, default=0)
    return "\n".join(line[cut:] for line in lines)


def _fuzzy_hits(content: str, search: str) -> list[tuple[int, int, str]]:
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
    return hits


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
