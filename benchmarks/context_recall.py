"""Recall of context's lexical pre-ranking on real repositories: for every Lite instance
whose repository has a local mirror, is every file the gold patch changes among the top K
files of `prerank` (the files the relevance model reads, `context.max_candidates`)?

"now" is `prerank` (what the issue names, then BM25), "before" the BM25-only ranking it
replaced. The ranking needs no model: it reads the base commit's non-test source files (from the
mirror, as the sandbox would) and the issue text. Reported per repository and overall, with
the gold file's rank, for K in --ks; instances are split into a design set (the repositories
the ranking was tuned on) and a held-out set, reported separately.

    python benchmarks/context_recall.py [--ks 10,20,40,80] [--mirror T] [--dataset FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.lite_mirrors import (  # noqa: E402
    GitReader,
    gold_files,
    load_instances,
    mirror_of,
    mirror_template,
)
from benchmarks.machine import describe  # noqa: E402
from harness.agent.context import is_candidate, tokens_estimate  # noqa: E402
from harness.agent.prerank import bm25_scores, prerank  # noqa: E402
from harness.config import ContextConfig  # noqa: E402

# The ranking's rules were designed looking at these repositories' instances only; the
# others are held out (never inspected while designing) and reported on their own.
DESIGN = ("sympy/sympy", "pytest-dev/pytest", "psf/requests", "pallets/flask")
MAX_FILE_TOKENS = ContextConfig().max_file_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="SWE-bench Lite JSONL")
    parser.add_argument("--mirror", help="mirror path template with {owner} and {name}")
    parser.add_argument("--ks", default="10,20,40,60,80,120")
    parser.add_argument("--repos", help="only these repositories (comma-separated owner/name)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/context_recall.json"))
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    template = mirror_template(args.mirror)
    only = set(args.repos.split(",")) if args.repos else None

    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    readers: dict[str, GitReader] = {}
    for inst in load_instances(args.dataset):
        if only and inst["repo"] not in only:
            continue
        mirror = mirror_of(template, inst["repo"])
        if mirror is None:
            continue
        reader = readers.setdefault(inst["repo"], GitReader(mirror))
        commit = inst["base_commit"]
        contents: dict[str, str] = {}
        for path in reader.ls(commit):
            if is_candidate(path):
                data = reader.read(commit, path)
                if data is not None:
                    contents[path] = data.decode("utf-8", "replace")
        t0 = time.perf_counter()
        ranked = list(prerank(inst["problem_statement"], contents))
        seconds = time.perf_counter() - t0
        lexical = bm25_scores(inst["problem_statement"], contents)
        before = sorted(contents, key=lambda p: (-lexical[p], p))  # the BM25-only ranking
        gold = gold_files(inst["patch"])
        row = {
            "instance_id": inst["instance_id"],
            "repo": inst["repo"],
            "files": len(contents),
            "seconds": round(seconds, 3),
            # What the relevance model reads for the top K files (each file is cut to
            # context.max_file_tokens, and every call repeats the issue).
            "read_tokens": {
                str(k): sum(
                    min(tokens_estimate(contents[p]), MAX_FILE_TOKENS)
                    + tokens_estimate(inst["problem_statement"])
                    for p in ranked[:k]
                )
                for k in ks
            },
        }
        for name, order in (("now", ranked), ("before", before)):
            position = {p: i + 1 for i, p in enumerate(order)}
            ranks = {g: position.get(g) for g in gold}  # None: not a candidate file
            known = [r for r in ranks.values() if r is not None]
            row[name] = {
                "gold": ranks,
                "worst_rank": max(known) if len(known) == len(gold) else None,
            }
        rows.append(row)
        print(f"{inst['instance_id']}: {row['now']['gold']} of {len(contents)}", flush=True)
    for reader in readers.values():
        reader.close()

    def table(subset: list[dict[str, Any]], name: str = "now") -> dict[str, Any]:
        n = len(subset)
        worst = [r[name]["worst_rank"] for r in subset]
        return {
            "instances": n,
            "not_candidates": sum(1 for w in worst if w is None),
            **{f"recall@{k}": round(sum(1 for w in worst if w and w <= k) / n, 3) for k in ks},
            "median_rank": statistics.median([w for w in worst if w] or [0]),
            "median_files": statistics.median([r["files"] for r in subset]),
            **{
                f"median_read_tokens@{k}": statistics.median(
                    [r["read_tokens"][str(k)] for r in subset]
                )
                for k in ks
            },
        }

    by_repo: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_repo[row["repo"]].append(row)
    result = {
        "benchmark": "context_recall",
        "machine": describe(),
        "design_repos": list(DESIGN),
        "overall": table(rows),
        "overall_before": table(rows, "before"),
        "design_before": table([r for r in rows if r["repo"] in DESIGN], "before"),
        "held_out_before": table([r for r in rows if r["repo"] not in DESIGN], "before"),
        "design": table([r for r in rows if r["repo"] in DESIGN]),
        "held_out": table([r for r in rows if r["repo"] not in DESIGN]),
        "by_repo": {repo: table(sub) for repo, sub in sorted(by_repo.items())},
        "ranking_seconds_median": statistics.median([r["seconds"] for r in rows]),
        "instances": rows,
        "seconds": round(time.monotonic() - started, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for name in (
        "overall",
        "overall_before",
        "design",
        "design_before",
        "held_out",
        "held_out_before",
    ):
        print(name, json.dumps(result[name]))
    for repo, t in result["by_repo"].items():
        print(repo, json.dumps(t))


if __name__ == "__main__":
    main()
