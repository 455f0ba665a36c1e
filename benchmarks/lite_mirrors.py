"""SWE-bench Lite instances and their repositories from local git mirrors, for the benchmarks
that measure the agent on real code (no work tree: files are read with `git cat-file`).

The data set and the mirrors are found by walking up from this checkout (`shared/datasets/`,
`.mirror/<owner>+<name>/repo`) unless given; a repository without a mirror is skipped.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATASET = "shared/datasets/swebench_lite_test.jsonl"
MIRROR = ".mirror/{owner}+{name}/repo"


def find_upwards(relative: str) -> Path | None:
    for base in (ROOT, *ROOT.parents):
        if (base / relative.split("{")[0]).exists():
            return base / relative
    return None


def load_instances(dataset: str | None) -> list[dict[str, Any]]:
    path = Path(dataset) if dataset else find_upwards(DATASET)
    if path is None or not path.exists():
        raise SystemExit(f"no data set: pass --dataset (looked for {DATASET} above {ROOT})")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mirror_template(given: str | None) -> str:
    if given:
        return given
    found = find_upwards(MIRROR)
    if found is None:
        raise SystemExit(f"no mirrors: pass --mirror (looked for {MIRROR} above {ROOT})")
    return str(found)


def mirror_of(template: str, repo: str) -> Path | None:
    owner, name = repo.split("/")
    path = Path(template.format(owner=owner, name=name))
    return path if path.exists() else None


class GitReader:
    """Blobs of one repository through one long-lived `git cat-file --batch`."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._proc = subprocess.Popen(
            ["git", "-C", str(repo), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def ls(self, commit: str) -> list[str]:
        out = subprocess.run(
            ["git", "-C", str(self.repo), "ls-tree", "-r", "-z", "--name-only", commit],
            capture_output=True,
            check=True,
        ).stdout
        return [p.decode("utf-8", "replace") for p in out.split(b"\0") if p]

    def read(self, commit: str, path: str) -> bytes | None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"{commit}:{path}\n".encode())
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().split()
        if len(header) < 3 or header[1] != b"blob":
            return None
        data = self._proc.stdout.read(int(header[2]))
        self._proc.stdout.read(1)  # the newline after each object
        return data

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)


@dataclass
class Hunk:
    old_start: int  # 1-based; 0 when the old side is empty
    old: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    old_eof_newline: bool = True
    new_eof_newline: bool = True


@dataclass
class FileDiff:
    old_path: str | None  # None: the patch creates the file
    new_path: str | None  # None: the patch deletes it
    hunks: list[Hunk] = field(default_factory=list)
    binary: bool = False


_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def parse_patch(patch: str) -> list[FileDiff]:
    """The files of a unified git diff, with their hunks."""
    files: list[FileDiff] = []
    current: FileDiff | None = None
    hunk: Hunk | None = None
    last = ""
    for line in patch.split("\n"):
        if line.startswith("diff --git "):
            parts = line.split(" ")
            current = FileDiff(parts[2][2:], parts[3][2:])
            files.append(current)
            hunk = None
        elif current is None:
            continue
        elif line.startswith("--- ") and hunk is None:
            current.old_path = None if line[4:] == "/dev/null" else line[6:]
        elif line.startswith("+++ ") and hunk is None:
            current.new_path = None if line[4:] == "/dev/null" else line[6:]
        elif line.startswith("Binary files"):
            current.binary = True
        elif m := _HUNK.match(line):
            hunk = Hunk(int(m.group(1)))
            current.hunks.append(hunk)
        elif hunk is not None and line.startswith("\\"):
            if last == "-":
                hunk.old_eof_newline = False
            elif last == "+":
                hunk.new_eof_newline = False
            else:
                hunk.old_eof_newline = hunk.new_eof_newline = False
        elif hunk is not None and line[:1] in (" ", "-", "+"):
            last = line[:1]
            if last in (" ", "-"):
                hunk.old.append(line[1:])
            if last in (" ", "+"):
                hunk.new.append(line[1:])
    return files


def apply_hunks(content: str, hunks: list[Hunk]) -> str:
    """`content` with `hunks` applied by their line numbers (the reference result)."""
    lines = content.split("\n")
    trailing = content.endswith("\n")
    if trailing:
        lines.pop()
    out: list[str] = []
    pos = 0  # next old line (0-based) not yet copied
    eof_newline = trailing
    for hunk in hunks:
        start = locate_hunk(lines, hunk, pos)
        out.extend(lines[pos:start])
        out.extend(hunk.new)
        pos = start + len(hunk.old)
        if pos >= len(lines):
            eof_newline = hunk.new_eof_newline
    out.extend(lines[pos:])
    text = "\n".join(out)
    return text + "\n" if (eof_newline and out) else text


def locate_hunk(lines: list[str], hunk: Hunk, pos: int) -> int:
    """Where the hunk's old lines are: at its stated line, else the nearest offset (as
    `git apply` and `patch` find a hunk whose line numbers are off)."""
    want = hunk.old_start - 1 if hunk.old else hunk.old_start
    if not hunk.old:
        return want
    for delta in range(len(lines)):
        for start in (want - delta, want + delta):
            fits = pos <= start <= len(lines) - len(hunk.old)
            if fits and lines[start : start + len(hunk.old)] == hunk.old:
                return start
    raise ValueError(f"hunk at line {hunk.old_start} does not match the file")


def gold_files(patch: str) -> list[str]:
    """Files the patch changes that exist before it (what context must find)."""
    return [f.old_path for f in parse_patch(patch) if f.old_path is not None]
