"""Real agent turns through the engine, with and without lookup (suffix) drafts, on this CPU.

The turns (benchmarks/data/agent_turns.json, see agent_turns_data.py) are requests our own
pipeline sent in `harness solve` runs with the README's quick config: context (relevance,
ranking), testing, editing and selection prompts of the bundled example, and the context,
testing and editing prompts of a SWE-bench Lite instance of pallets/flask (rebuilt from a
local git mirror; skipped without one). They are replayed greedily with SmolLM2-135M-Instruct
through two engines on one model, target-only and with `--draft-model suffix`: per stage,
the programs of a source run concurrently (as in a solve), each program's turns in order. The
variants alternate which goes first from stage to stage. Reported per stage: tokens/s of each
and their ratio; outputs must be identical.

Also measured: host overhead of an engine step (benchmarks/engine_host.py) and the wall time
of the README's main command (`harness solve examples/durations.issue.md --repo
examples/durations --config examples/smollm2-quick.yaml`, setup done).

    python -m benchmarks.agent_turns                  # ~25 min on 2 cores; writes
                                                      # benchmarks/results/agent_turns_cpu.json
    python -m benchmarks.agent_turns --stages editing --limit 2   # a quick look
    python -m benchmarks.agent_turns record --dataset ../shared/datasets/swebench_lite_test.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import agent_turns_data as data  # noqa: E402
from benchmarks.machine import describe  # noqa: E402

MODEL_DIR = Path.home() / ".cache" / "harness" / "models" / "smollm2-135m"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = ROOT / "benchmarks" / "results" / "agent_turns_cpu.json"
STAGES = ("context", "testing", "editing", "selection")
FLASK = "pallets__flask-4992"
QUICK = ROOT / "examples" / "smollm2-quick.yaml"


# -- recording ----------------------------------------------------------------------------------
async def _record_durations(cache: Path, work: Path) -> list[dict[str, Any]]:
    from examples.scripted.durations_oracle import respond
    from harness.config import load_config
    from harness.llm.scripted import ScriptedLLM
    from harness.orchestrator import Orchestrator
    from harness.sandboxes import make_backend
    from harness.tasks import make_task

    task, _ = await make_task(
        str(ROOT / "examples/durations.issue.md"), str(ROOT / "examples/durations"), None, cache
    )
    rec = data.Recorder(ScriptedLLM(respond), "durations")
    async with make_backend("docker", cache) as backend:
        await Orchestrator(load_config(QUICK), rec, backend).solve(task, work / "durations")
    return rec.turns


async def _record_flask(
    cache: Path, work: Path, dataset: Path, mirror: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from harness.config import load_config
    from harness.llm.model_store import ModelStore
    from harness.llm.specs import make_llm
    from harness.orchestrator import Orchestrator
    from harness.sandboxes import make_backend
    from harness.tasks import make_task

    inst = next(
        json.loads(line)
        for line in dataset.read_text().splitlines()
        if json.loads(line)["instance_id"] == FLASK
    )
    checkout = work / "flask"
    subprocess.run(["git", "clone", "-q", "--shared", str(mirror), str(checkout)], check=True)
    subprocess.run(["git", "-C", str(checkout), "checkout", "-q", inst["base_commit"]], check=True)
    issue = work / "flask.issue.md"
    issue.write_text(inst["problem_statement"])
    task, _ = await make_task(str(issue), str(checkout), inst["base_commit"], cache)
    config = load_config(QUICK)
    llm = await make_llm(config.model, store=ModelStore(MODEL_DIR.parent), engine=config.engine)
    rec = data.Recorder(llm, "flask")
    try:
        async with make_backend("docker", cache) as backend:
            await Orchestrator(config, rec, backend).solve(task, work / "flask-run")
    finally:
        await llm.aclose()
    listed = subprocess.run(
        ["git", "--git-dir", str(mirror), "ls-tree", "-r", "--name-only", inst["base_commit"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    texts = [p for p in listed if p.endswith((".py", ".rst", ".txt", ".cfg", ".toml", ".md"))]
    files = data.git_files(mirror, inst["base_commit"], texts)
    for t in rec.turns:
        for m in t["messages"]:
            m["content"] = data.compress(m["content"], files)
        t["reply"] = data.compress(t["reply"], files)
    used = sorted(
        {
            part["ref"][0]
            for t in rec.turns
            for parts in [*(m["content"] for m in t["messages"]), t["reply"]]
            for part in parts
            if isinstance(part, dict)
        }
    )
    source = {
        "repo": inst["repo"],
        "commit": inst["base_commit"],
        "instance_id": FLASK,
        "files": used,
        "model": "smollm2-135m (the quick config's model, sampling as configured)",
    }
    return rec.turns, source


def record(dataset: Path, mirrors: Path | None) -> None:
    mirror = data.find_mirror("pallets/flask", mirrors)
    if mirror is None:
        raise SystemExit("no git mirror of pallets/flask (pass --mirrors DIR)")
    with tempfile.TemporaryDirectory(prefix="agent-turns-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        durations = asyncio.run(_record_durations(cache, work))
        for t in durations:
            for m in t["messages"]:
                m["content"] = [m["content"]]
            t["reply"] = [t["reply"]]
        flask, flask_src = asyncio.run(_record_flask(cache, work, dataset, mirror))
    out = {
        "about": "Requests `harness solve` sent with examples/smollm2-quick.yaml; see "
        "benchmarks/agent_turns_data.py for the format and how references are rebuilt.",
        "sources": {
            "durations": {
                "example": "examples/durations",
                "model": "examples/scripted/durations_oracle.py",
            },
            "flask": flask_src,
        },
        "turns": durations + flask,
    }
    data.DATA.parent.mkdir(parents=True, exist_ok=True)
    data.DATA.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{len(out['turns'])} turns -> {data.DATA}")


# -- replay -------------------------------------------------------------------------------------
def _engines(lookup_k: int | None) -> tuple[Any, Any]:
    import torch

    from harness.llm.engine.load import EngineSettings, build_engine_llm
    from harness.llm.local import load_pretrained

    torch.set_num_threads(os.cpu_count() or 1)
    model, tok = load_pretrained(str(MODEL_DIR), gguf_file=GGUF, device="cpu")
    window = int(model.config.max_position_embeddings)
    base = build_engine_llm(
        model,
        tok,
        name="smollm2-135m",
        settings=EngineSettings(kv_memory_gb=0.75, draft_model="none"),
        context_window=window,
    )
    suffix = build_engine_llm(
        model,
        tok,
        name="smollm2-135m",
        settings=EngineSettings(kv_memory_gb=0.75, draft_model="suffix", speculate=lookup_k),
        context_window=window,
    )
    return base, suffix


async def _replay(llm: Any, turns: Sequence[data.Turn], ns: str) -> tuple[float, int, list[str]]:
    """(seconds, generated tokens, texts) of the turns: programs at once, turns in order."""
    from harness.llm.base import ChatRequest, Message, Sampling

    programs: dict[str, list[int]] = {}
    for i, t in enumerate(turns):
        programs.setdefault(t.program, []).append(i)
    texts = [""] * len(turns)
    tokens = 0

    async def run(idx: list[int]) -> None:
        nonlocal tokens
        for i in idx:
            t = turns[i]
            req = ChatRequest(
                tuple(Message(r, c) for r, c in t.messages),  # type: ignore[arg-type]
                Sampling(0.0, max_tokens=t.max_tokens),
                program_id=f"{ns}/{t.program}",
            )
            resp = await llm.chat(req)
            texts[i] = resp.text
            tokens += resp.usage.completion_tokens

    t0 = time.perf_counter()
    await asyncio.gather(*(run(idx) for idx in programs.values()))
    return time.perf_counter() - t0, tokens, texts


async def replay_all(
    turns: Sequence[data.Turn], lookup_k: int | None, stages: Sequence[str]
) -> dict[str, Any]:
    base, suffix = _engines(lookup_k)
    groups: list[tuple[str, str, list[data.Turn]]] = []
    for source in dict.fromkeys(t.source for t in turns):
        for stage in stages:
            g = [t for t in turns if t.source == source and t.stage == stage]
            if g:
                groups.append((source, stage, g))
    per_group: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    try:
        for gi, (source, stage, g) in enumerate(groups):
            order = [("base", base), ("suffix", suffix)]
            if gi % 2:
                order.reverse()
            res: dict[str, tuple[float, int, list[str]]] = {}
            for name, llm in order:
                res[name] = await _replay(llm, g, name)
            (tb, nb, xb), (ts, ns, xs) = res["base"], res["suffix"]
            outputs += [
                {"source": source, "stage": stage, "program": t.program, "text": x}
                for t, x in zip(g, xb, strict=True)
            ]
            per_group.append(
                {
                    "source": source,
                    "stage": stage,
                    "turns": len(g),
                    "tokens": nb,
                    "base_s": round(tb, 3),
                    "suffix_s": round(ts, 3),
                    "base_tok_per_s": round(nb / tb, 3),
                    "suffix_tok_per_s": round(ns / ts, 3),
                    "speedup": round((ns / ts) / (nb / tb), 3),
                    "outputs_equal": xb == xs,
                    "first_suffix": gi % 2 == 1,
                }
            )
            print(json.dumps(per_group[-1]), flush=True)
        stats = suffix.speculation_stats()
    finally:
        await base.aclose()
        await suffix.aclose()
    by_stage: dict[str, dict[str, Any]] = {}
    for stage in stages:
        rows = [r for r in per_group if r["stage"] == stage]
        if not rows:
            continue
        tb = sum(r["base_s"] for r in rows)
        ts = sum(r["suffix_s"] for r in rows)
        n = sum(r["tokens"] for r in rows)
        by_stage[stage] = {
            "tokens": n,
            "base_tok_per_s": round(n / tb, 3),
            "suffix_tok_per_s": round(n / ts, 3),
            "speedup": round(tb / ts, 3),
        }
    tb = sum(r["base_s"] for r in per_group)
    ts = sum(r["suffix_s"] for r in per_group)
    return {
        "groups": per_group,
        "stages": by_stage,
        "speedup_all": round(tb / ts, 3) if ts else None,
        "speedup_editing": by_stage.get("editing", {}).get("speedup"),
        "speedup_min_stage": min((s["speedup"] for s in by_stage.values()), default=None),
        "outputs_equal": all(r["outputs_equal"] for r in per_group),
        "spec_stats": stats.to_json() if stats is not None else None,
        "outputs": outputs,
    }


def readme_main(root: Path = ROOT, *, setup: bool = True) -> dict[str, Any]:
    """Wall time of the README's main command, setup done: `scripts/setup` again (a no-op
    then; skipped, and said so, in a checkout without its .venv, where it would build one),
    then the solve, with the package of `root` and the interpreter running this script."""
    setup_s: float | None = None
    if setup and (root / ".venv" / "bin" / "harness").exists():
        t0 = time.perf_counter()
        subprocess.run(["./scripts/setup"], cwd=root, check=True, capture_output=True)
        setup_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="readme-main-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "harness",
            "solve",
            "examples/durations.issue.md",
            "--repo",
            "examples/durations",
            "--config",
            "examples/smollm2-quick.yaml",
            "--out",
            str(Path(tmp) / "run"),
            "--json",
        ]
        t1 = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(root)}
        res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
        solve_s = time.perf_counter() - t1
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
    return {
        "readme_main_s": round((setup_s or 0.0) + solve_s, 1),
        "setup_s": round(setup_s, 1) if setup_s is not None else None,  # None: not run
        "solve_s": round(solve_s, 1),
        "exit_code": res.returncode,
        "status": summary.get("status"),
        "timings_s": summary.get("timings_s"),
        "speculation": summary.get("speculation"),
    }


def host_baseline(tree: Path) -> dict[str, Any]:
    """engine_host.py's plain figures for the engine of another checkout (same interpreter)."""
    script = Path(__file__).parent / "engine_host.py"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    res = subprocess.run(
        [sys.executable, str(script), "--plain-only"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, Any] = json.loads(res.stdout)
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    out["commit"] = commit.stdout.strip()
    return out


def _commit() -> str:
    res = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return res.stdout.strip()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("command", nargs="?", default="run", choices=("run", "record"))
    ap.add_argument("--dataset", type=Path, help="record: SWE-bench Lite JSONL")
    ap.add_argument("--mirrors", type=Path, help="git mirrors: DIR/<owner>+<name>/repo")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--limit", type=int, default=0, help="turns per (source, stage); 0: all")
    ap.add_argument("--k", type=int, default=None, help="most lookup drafts per round")
    ap.add_argument("--no-readme", action="store_true", help="skip the README command")
    ap.add_argument("--no-host", action="store_true", help="skip the host-overhead section")
    ap.add_argument(
        "--baseline",
        type=Path,
        help="also measure another checkout (e.g. a worktree of the commit before lookup "
        "drafts): its engine's host overhead (this script's engine_host.py) and its README "
        "solve",
    )
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--save-outputs", type=Path, help="write the greedy replies here (JSON)")
    args = ap.parse_args(argv)
    if args.command == "record":
        if args.dataset is None:
            raise SystemExit("record needs --dataset")
        record(args.dataset, args.mirrors)
        return {}
    turns, skipped = data.load_turns(mirrors=args.mirrors)
    stages = [s for s in args.stages.split(",") if s]
    if args.limit:
        kept: list[data.Turn] = []
        count: dict[tuple[str, str], int] = {}
        for t in turns:
            key = (t.source, t.stage)
            if count.get(key, 0) < args.limit:
                kept.append(t)
                count[key] = count.get(key, 0) + 1
        turns = kept
    out: dict[str, Any] = {
        "machine": describe(),
        "commit": _commit(),
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, float32), greedy",
        "turns": len(turns),
        "skipped_sources": skipped,
    }
    t0 = time.perf_counter()
    out.update(asyncio.run(replay_all(turns, args.k, stages)))
    outputs = out.pop("outputs")
    if args.save_outputs is not None:
        args.save_outputs.write_text(json.dumps(outputs, indent=1))
    out["replay_s"] = round(time.perf_counter() - t0, 1)
    if not args.no_host:
        from benchmarks import engine_host

        host = engine_host.run_all()
        out["host"] = host
        out["host_ms_per_step_b1"] = host["host_ms_per_step_b1"]
        out["host_ms_per_step_b64"] = host["host_ms_per_step_b64"]
    if args.baseline is not None:
        if not args.no_host:
            out["host_before"] = host_baseline(args.baseline)
        if not args.no_readme:
            out["readme_before"] = readme_main(args.baseline, setup=False)
    if not args.no_readme:
        readme = readme_main()
        out["readme"] = readme
        out["readme_main_s"] = readme["readme_main_s"]
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("groups", "host")}, indent=2))
    return out


if __name__ == "__main__":
    main()
