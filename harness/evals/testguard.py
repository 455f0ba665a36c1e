"""Which paths a graded patch may not change: how the tests run belongs to the data set.

A patch could otherwise make failing tests pass without fixing anything: a `conftest.py`
that rewrites outcomes, `addopts` in pytest.ini / tox.ini / setup.cfg / pyproject.toml, a
`sitecustomize.py` (the source tree is on sys.path), a module in a test directory that
shadows the package, a deleted test file, a binary that shadows a module. Grading puts every
such path the patch touched back to the base commit (or removes it) before the test patch.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from pathlib import PurePosixPath

TEST_DIRS = frozenset({"test", "tests", "testing"})
# Files that configure, collect or bootstrap a test run, and packaging that can register
# pytest plugins (entry points) at the re-install before the tests.
CONFIG_FILES = frozenset(
    {
        "conftest.py",
        "pytest.ini",
        ".pytest.ini",
        "tox.ini",
        "setup.cfg",
        "pyproject.toml",
        "setup.py",
        "noxfile.py",
        "sitecustomize.py",
        "usercustomize.py",
        ".gitattributes",
    }
)
# Path hooks and compiled modules (which shadow a .py of the same name) come from the image.
BINARY_SUFFIXES = (".pth", ".pyc", ".pyo", ".so", ".pyd")
_TEST_FILE = re.compile(r"^(test_.*\.py|.*_tests?\.py|tests\.py)$")
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_GIT_HEADER = re.compile(rf"^diff --git ({_QUOTED}|\S+) ({_QUOTED}|\S+)$")
_FILE_LINE = re.compile(r"^(?:---|\+\+\+|\*\*\*) (.+?)(?:\t.*)?$")
_HUNK_RANGE = re.compile(r"^\d+(?:,\d+)? [-*]{4}$")  # context diffs: "*** 1,5 ****"
_INTERPRETER = re.compile(r"^(python[0-9.]*|bash|sh)$")
_META_LINE = re.compile(r"^(?:rename|copy) (?:from|to) (.+)$")


def protected(path: str, named: Iterable[str] = ()) -> bool:
    """Whether `path` (relative to the repository root) is test infrastructure."""
    parts = PurePosixPath(path).parts
    if not parts:
        return False
    name = parts[-1]
    return (
        any(p in TEST_DIRS for p in parts)
        or name in CONFIG_FILES
        or bool(_TEST_FILE.match(name))
        or name.endswith(BINARY_SUFFIXES)
        or path in set(named)
    )


def touches_git_dir(paths: Iterable[str]) -> bool:
    return any(".git" in PurePosixPath(p).parts for p in paths)


def named_in_commands(commands: Iterable[str]) -> set[str]:
    """Repository files a test command executes (sympy's `bin/test`, Django's
    `./tests/runtests.py`, `python scripts/x.py`): relative paths in command position."""
    out: set[str] = set()
    for cmd in commands:
        try:
            lexer = shlex.shlex(cmd, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            words = list(lexer)
        except ValueError:
            words = cmd.split()
        expect = True  # the next word starts a command
        interpreter = False
        for word in words:
            if word and set(word) <= set("&|;()<>"):
                expect, interpreter = True, False
                continue
            if expect and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):
                continue  # an environment assignment before the command
            if expect or (interpreter and not word.startswith("-")):
                if "/" in word and not word.startswith(("/", "$", "~")):
                    out.add(_clean(word))
                interpreter = expect and bool(_INTERPRETER.match(word.rsplit("/", 1)[-1]))
                expect = False
    return out


def patch_paths(patch: str) -> set[str]:
    """Every path a unified diff names (old and new sides, renames, copies), relative to the
    root: what `git apply` or `patch -p1` would touch."""
    out: set[str] = set()
    for line in patch.splitlines():
        if m := _GIT_HEADER.match(line):
            out.add(_strip_prefix(_unquote(m.group(1))))
            out.add(_strip_prefix(_unquote(m.group(2))))
        elif m := _META_LINE.match(line):
            out.add(_unquote(m.group(1)))
        elif m := _FILE_LINE.match(line):
            name = _unquote(m.group(1).strip())
            if name != "/dev/null" and not _HUNK_RANGE.match(name):
                out.add(_strip_prefix(name))
    return {p for p in (_clean(p) for p in out) if p}


def status_paths(porcelain_z: str) -> set[tuple[str, str]]:
    """(status, path) entries of `git status --porcelain -z` (both paths of a rename)."""
    entries: set[tuple[str, str]] = set()
    fields = porcelain_z.split("\0")
    i = 0
    while i < len(fields):
        item = fields[i]
        i += 1
        if len(item) < 4:
            continue
        code, path = item[:2], item[3:]
        entries.add((code, path.rstrip("/")))
        if code[0] in "RC" and i < len(fields):  # the rename's source follows
            entries.add((code, fields[i].rstrip("/")))
            i += 1
    return entries


def _strip_prefix(name: str) -> str:
    parts = name.split("/", 1)
    return parts[1] if len(parts) == 2 else name  # -p1, as `patch` applies it


def _clean(path: str) -> str:
    while path.startswith("./"):
        path = path[2:]
    return path.rstrip("/")


def _unquote(path: str) -> str:
    """git's C-style quoting of unusual names ("a/x\\ty", octal UTF-8 bytes)."""
    if len(path) >= 2 and path[0] == path[-1] == '"':
        raw = path[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        try:
            return raw.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return raw
    return path
