"""Cheap pre-ranking of a repository's source files for an issue, with no model calls.

First what the issue names: file paths (tracebacks included), dotted module names and
imports, the symbols a file defines, and the files those named files import; then BM25 over
paths and contents for the rest. Each signal is a score in [0, 1]; the rank is their sum.
"""

from __future__ import annotations

import builtins
import keyword
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath

_WORD = re.compile(r"[A-Za-z][a-z0-9]*|[0-9]+")
_IDENT = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_PATHLIKE = re.compile(r"[\w.\\/-]+")  # runs of path characters (linear: no backtracking)
_SOURCE = re.compile(r"\.(?:py|pyx|pyi|js|jsx|ts|tsx|go|rs|java|c|h|cc|cpp|rb)$")
_FROM = re.compile(r"^\s*from\s+(\.*[\w.]*)\s+import\s+\(?([\w\s,]+)", re.M)
_IMPORT = re.compile(r"^\s*import\s+([\w.]+(?:\s*,\s*[\w.]+)*)", re.M)
_DEF = re.compile(r"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+([A-Za-z_]\w*)", re.M)
_ASSIGN = re.compile(r"^([A-Za-z_]\w*)[ \t]*(?::[^=\n]*)?=[^=]", re.M)
_USE = re.compile(r"\b([A-Za-z_]\w*)\(|\.([A-Za-z_]\w*)|\bin ([A-Za-z_]\w*)$", re.M)

# Python's own names, and the languages of code fences: never a repository's symbols.
_COMMON = (
    frozenset(keyword.kwlist)
    | frozenset(dir(builtins))
    | {
        "self",
        "cls",
        "python",
        "py",
        "pycon",
        "console",
        "bash",
        "shell",
        "cmd",
        "text",
        "pytb",
        "diff",
        "sh",
    }
)

# Weights of the signals (each signal is in [0, 1]).
NAMED = 3.0  # the issue names the file: a path, a traceback frame, a module
DEFINES = 2.0  # the file defines symbols the issue uses (rare symbols count more)
IMPORTED = 1.0  # a file the issue names (or that defines its symbols) imports it
LEXICAL = 1.0  # BM25 over the path and the contents, relative to the best file
CENTRAL = 0.3  # imported by many files of the repository (fixes concentrate there)


def words(text: str) -> list[str]:
    """Identifier-aware words: snake_case and CamelCase split, lowercased."""
    return [w.lower() for w in _WORD.findall(text)]


def bm25_scores(
    query: str, docs: Mapping[str, str], k1: float = 1.2, b: float = 0.75
) -> dict[str, float]:
    terms = Counter(words(query))
    toks = {path: words(path + " " + text) for path, text in docs.items()}
    n = len(docs) or 1
    avg = sum(len(t) for t in toks.values()) / n or 1.0
    df: Counter[str] = Counter()
    for t in toks.values():
        df.update(set(t))
    scores = {}
    for path, t in toks.items():
        tf = Counter(t)
        score = 0.0
        for term in terms:
            if term not in tf:
                continue
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            score += idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(t) / avg))
        # A file named in the issue is a strong signal.
        if PurePosixPath(path).name in query or path in query:
            score += 10.0
        scores[path] = score
    return scores


def prerank(issue: str, contents: Mapping[str, str]) -> dict[str, float]:
    """Every file's score, best first."""
    modules = _module_index(contents)
    named = _named_files(issue, contents, modules)
    defines = _defining_files(issue, contents)
    sources = {**{p: DEFINES / NAMED * v for p, v in defines.items()}, **named}
    imported = _imported_by(sources, contents, modules)
    central = _centrality(contents, modules)
    lexical = bm25_scores(issue, contents)
    top = max(lexical.values(), default=0.0) or 1.0
    score = {
        path: NAMED * named.get(path, 0.0)
        + DEFINES * defines.get(path, 0.0)
        + IMPORTED * imported.get(path, 0.0)
        + LEXICAL * lexical[path] / top
        + CENTRAL * central.get(path, 0.0)
        for path in contents
    }
    return {p: score[p] for p in sorted(score, key=lambda p: (-score[p], p))}


def _module_index(paths: Iterable[str]) -> dict[str, list[str]]:
    """Dotted names (every suffix of two or more parts, so `src/` layouts match) -> files."""
    index: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        parts = list(PurePosixPath(path).with_suffix("").parts)
        if parts and parts[-1] == "__init__":
            parts.pop()
        for start in range(len(parts) - 1):
            index[".".join(parts[start:])].append(path)
    return index


def _named_files(
    issue: str, paths: Iterable[str], modules: Mapping[str, list[str]]
) -> dict[str, float]:
    """Files the issue names by path (or a tail of one) or by dotted module name."""
    by_tail: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        parts = PurePosixPath(path).parts
        for start in range(len(parts)):
            by_tail["/".join(parts[start:])].append(path)
    found: dict[str, float] = defaultdict(float)
    for raw in {m.rstrip(".") for m in _PATHLIKE.findall(issue)}:
        if not _SOURCE.search(raw):
            continue
        tail = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
        for start in range(len(tail)):  # the longest tail that is a file here
            hits = by_tail.get("/".join(tail[start:]))
            if hits:
                for hit in hits:
                    found[hit] = max(found[hit], 1.0 / len(hits))
                break
    for dotted in _dotted_names(issue):
        names = dotted.split(".")
        for end in range(len(names), 1, -1):  # the longest prefix that is a module here
            hits = modules.get(".".join(names[:end]))
            if hits:
                for hit in hits:
                    found[hit] = max(found[hit], 1.0 / len(hits))
                break
    return found


def _dotted_names(text: str) -> set[str]:
    names = {m for m in _IDENT.findall(text) if "." in m}
    for module, imported in _FROM.findall(text):
        for name in re.split(r"[\s,]+", imported):
            if name and module and not module.startswith("."):
                names.add(f"{module}.{name}")
    for group in _IMPORT.findall(text):
        names.update(n.strip() for n in group.split(","))
    return names


def _issue_symbols(issue: str) -> set[str]:
    """Names the issue uses as code: called (`name(`), reached as an attribute (`.name`),
    imported, named in a traceback frame (`in name`), or shaped like an identifier
    (snake_case, CamelCase, dunder). Plain words, in prose or in pasted output, are not."""
    symbols: set[str] = set()
    for m in _USE.finditer(issue):
        symbols.add(m.group(1) or m.group(2) or m.group(3))
    for _module, imported in _FROM.findall(issue):
        symbols.update(n for n in re.split(r"[\s,()]+", imported) if n)
    for m in _IDENT.findall(issue):
        for part in m.split("."):
            if "_" in part.strip("_") or any(c.isupper() for c in part[1:]):
                symbols.add(part)
    return {s for s in symbols if len(s) > 2 and s not in _COMMON}


def _defining_files(issue: str, contents: Mapping[str, str]) -> dict[str, float]:
    """Files that define (def, class, top-level assignment) names the issue uses; a name
    defined in n files gives each 1/n, and the sum is scaled to [0, 1]."""
    symbols = _issue_symbols(issue)
    if not symbols:
        return {}
    definers: dict[str, list[str]] = defaultdict(list)
    for path, text in contents.items():
        names = set(_DEF.findall(text)) | set(_ASSIGN.findall(text))
        for name in names & symbols:
            definers[name].append(path)
    score: dict[str, float] = defaultdict(float)
    for files in definers.values():
        for path in files:
            score[path] += 1.0 / len(files)
    top = max(score.values(), default=0.0) or 1.0
    return {path: s / top for path, s in score.items()}


def _imported_by(
    named: Mapping[str, float], contents: Mapping[str, str], modules: Mapping[str, list[str]]
) -> dict[str, float]:
    """Files that the files the issue names import (one hop), each import 1/len(imports)."""
    score: dict[str, float] = defaultdict(float)
    for path, weight in named.items():
        targets = _imports(path, contents.get(path, ""), modules)
        for target in targets:
            if target != path:
                score[target] = max(score[target], weight / math.sqrt(len(targets)))
    return score


def _centrality(contents: Mapping[str, str], modules: Mapping[str, list[str]]) -> dict[str, float]:
    """log(1 + files importing it), scaled to [0, 1]."""
    indegree: Counter[str] = Counter()
    for path, text in contents.items():
        indegree.update(t for t in _imports(path, text, modules) if t != path)
    top = math.log1p(max(indegree.values(), default=0)) or 1.0
    return {path: math.log1p(n) / top for path, n in indegree.items()}


def _imports(path: str, text: str, modules: Mapping[str, list[str]]) -> set[str]:
    package = list(PurePosixPath(path).parent.parts)
    found: set[str] = set()
    names: list[str] = []
    for module, imported in _FROM.findall(text):
        dots = len(module) - len(module.lstrip("."))
        if dots:  # relative: from the file's package, one level up per extra dot
            base = package[: len(package) - (dots - 1)] if dots > 1 else package
            module = ".".join([*base, module.lstrip(".")]).strip(".")
        names.append(module)
        names.extend(f"{module}.{n}" for n in re.split(r"[\s,]+", imported) if n)
    for group in _IMPORT.findall(text):
        names.extend(n.strip() for n in group.split(","))
    for name in names:
        hits = modules.get(name)
        if hits and len(hits) == 1:
            found.add(hits[0])
    return found
