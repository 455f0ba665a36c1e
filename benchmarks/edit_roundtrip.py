"""The edit format on real code: every Lite gold patch, written as a model would write it
(search/replace blocks in an <edit> reply), parsed and applied to the base commit's files.

Each hunk becomes one block (SEARCH = its old lines, REPLACE = its new lines; context is
widened, as the model is told to, when the old lines are not unique in the file), once with
the hunk's context lines and once with the changed lines alone. An instance
is `exact` when every file comes out byte for byte as the gold patch makes it, `observation`
when the edit is refused with a message for the model, `corrupted` when it applies but the
result differs (the silent failure the format must never have). `--baseline REV` measures the
edit module of another revision of this repository on the same input.

    python benchmarks/edit_roundtrip.py [--baseline main] [--mirror TEMPLATE] [--dataset FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.lite_mirrors import (  # noqa: E402
    FileDiff,
    GitReader,
    Hunk,
    apply_hunks,
    load_instances,
    locate_hunk,
    mirror_of,
    mirror_template,
    parse_patch,
)
from benchmarks.machine import describe  # noqa: E402
from harness.agent import edits as current_edits  # noqa: E402
from harness.agent.actions import Action, parse_action  # noqa: E402

# "hunk": each block is a gold hunk with its context lines (three, as a model quotes);
# "minimal": only the changed lines, widened until unique (the fuzzy and unique paths).
MODES = ("hunk", "minimal")


def edits_at(rev: str) -> types.ModuleType:
    """harness/agent/edits.py as it was at `rev`, loaded as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:harness/agent/edits.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f"edits_at_{rev}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:harness/agent/edits.py", "exec"), module.__dict__)
    return module


def trimmed(hunk: Hunk, base: list[str]) -> Hunk:
    """The hunk without its context lines (at least one old line stays)."""
    old, new = hunk.old, hunk.new
    lead = 0
    while lead < min(len(old) - 1, len(new)) and old[lead] == new[lead]:
        lead += 1
    trail = 0
    while trail < min(len(old) - lead - 1, len(new) - lead) and old[-1 - trail] == new[-1 - trail]:
        trail += 1
    start = locate_hunk(base, hunk, 0)
    return Hunk(start + lead + 1, old[lead : len(old) - trail], new[lead : len(new) - trail])


def block_lines(path: str, hunk: Hunk, base: list[str], minimal: bool = False) -> list[str]:
    """One block for `hunk`, widened with the file's lines until its SEARCH is unique;
    `minimal` starts from the changed lines alone instead of the hunk's context."""
    if minimal and hunk.old:
        hunk = trimmed(hunk, base)
    old, new = list(hunk.old), list(hunk.new)
    start = locate_hunk(base, hunk, 0)
    end = start + len(old)
    text = "\n".join(base)
    while True:
        search = "\n".join(old)
        if (search.strip() and text.count(search) == 1) or (start == 0 and end >= len(base)):
            break
        if start > 0:
            start -= 1
            old.insert(0, base[start])
            new.insert(0, base[start])
        if end < len(base) and (not search.strip() or text.count(search) > 1):
            old.append(base[end])
            new.append(base[end])
            end += 1
    return [path, "<<<<<<< SEARCH", *old, "=======", *new, ">>>>>>> REPLACE"]


def reply_for(diffs: list[FileDiff], bases: dict[str, str], minimal: bool) -> str:
    lines = ["I will fix it.", "<edit>"]
    for diff in diffs:
        path = diff.new_path or ""
        if diff.old_path is None:
            new = diff.hunks[0].new if diff.hunks else []
            lines += [path, "<<<<<<< SEARCH", "=======", *new, ">>>>>>> REPLACE"]
            continue
        base = bases[diff.old_path].split("\n")
        for hunk in diff.hunks:
            lines += block_lines(path, hunk, base, minimal)
    return "\n".join([*lines, "</edit>"])


def outcome(
    module: types.ModuleType, reply: str, bases: dict[str, str | None], want: dict[str, str]
) -> tuple[str, str]:
    action = parse_action(reply, ("edit", "test", "done"))
    if not isinstance(action, Action) or action.kind != "edit":
        return "observation", f"action: {getattr(action, 'message', action)}"
    try:
        blocks = module.parse_edit_blocks(action.body)
        got = module.apply_blocks(blocks, bases)
    except module.EditError as exc:
        return "observation", str(exc)
    wrong = sorted(p for p, text in want.items() if got.get(p) != text)
    if not wrong:
        return "exact", ""
    broken = [p for p in wrong if p.endswith(".py") and not compiles(got.get(p, ""), p)]
    return "corrupted", f"differs: {wrong}" + (f"; SyntaxError: {broken}" if broken else "")


def compiles(text: str, path: str) -> bool:
    try:
        compile(text, path, "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="SWE-bench Lite JSONL")
    parser.add_argument("--mirror", help="mirror path template with {owner} and {name}")
    parser.add_argument("--baseline", help="a git revision whose edits.py is measured too")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/edit_roundtrip.json"))
    args = parser.parse_args()
    template = mirror_template(args.mirror)
    modules = {"current": current_edits}
    if args.baseline:
        modules[f"baseline ({args.baseline})"] = edits_at(args.baseline)

    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    readers: dict[str, GitReader] = {}
    for inst in load_instances(args.dataset):
        mirror = mirror_of(template, inst["repo"])
        if mirror is None:
            continue
        reader = readers.setdefault(inst["repo"], GitReader(mirror))
        diffs = parse_patch(inst["patch"])
        row: dict[str, Any] = {"instance_id": inst["instance_id"], "repo": inst["repo"]}
        if any(d.new_path is None or d.binary for d in diffs):
            row["unexpressible"] = "the patch deletes a file or changes a binary one"
            rows.append(row)
            continue
        bases: dict[str, str | None] = {}
        want: dict[str, str] = {}
        for diff in diffs:
            if diff.old_path is None:
                bases[diff.new_path or ""] = None
                want[diff.new_path or ""] = apply_hunks("", diff.hunks)
                continue
            data = reader.read(inst["base_commit"], diff.old_path)
            base = (data or b"").decode("utf-8")
            bases[diff.old_path] = base
            want[diff.old_path] = apply_hunks(base, diff.hunks)
        existing = {k: v for k, v in bases.items() if v is not None}
        for mode in MODES:
            reply = reply_for(diffs, existing, mode == "minimal")
            for name, module in modules.items():
                kind, detail = outcome(module, reply, bases, want)
                row[f"{name}, {mode}"] = {
                    "outcome": kind,
                    **({"detail": detail[:300]} if detail else {}),
                }
        rows.append(row)
    for reader in readers.values():
        reader.close()

    summary: dict[str, Any] = {}
    for name in (f"{n}, {mode}" for n in modules for mode in MODES):
        counts = Counter(r[name]["outcome"] for r in rows if name in r)
        summary[name] = {
            "instances": sum(counts.values()),
            **{k: counts.get(k, 0) for k in ("exact", "observation", "corrupted")},
            "not_exact": [
                {"instance_id": r["instance_id"], **r[name]}
                for r in rows
                if name in r and r[name]["outcome"] != "exact"
            ],
        }
    result = {
        "benchmark": "edit_roundtrip",
        "machine": describe(),
        "instances": len(rows),
        "repos": dict(Counter(r["repo"] for r in rows)),
        "unexpressible": [r["instance_id"] for r in rows if "unexpressible" in r],
        "summary": summary,
        "seconds": round(time.monotonic() - started, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for name, s in summary.items():
        print(
            f"{name}: {s['exact']}/{s['instances']} exact, {s['observation']} observations, "
            f"{s['corrupted']} corrupted"
        )
        for item in s["not_exact"]:
            print(f"  {item['instance_id']}: {item['outcome']}: {item.get('detail', '')[:160]}")


if __name__ == "__main__":
    main()
