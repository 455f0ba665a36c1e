"""Sandbox overhead: open-to-first-exec, per-exec overhead and fork time, per backend.

Runs on a real repository of a few thousand files: by default Django's source release from
PyPI (downloaded with pip, committed into a fresh git repository); `--repo` picks another.
Targets (issue 2): open-to-first-exec < 1 s, exec overhead < 50 ms, fork < 1 s.

    python benchmarks/sandbox_overhead.py [--repo PATH] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe
from harness.errors import HarnessError
from harness.sandboxes import SandboxSpec, make_backend

DJANGO = "django==5.1.4"


def django_repo(workdir: Path) -> Path:
    """Django's sdist as a git repository (a real project: ~6,000 files)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            DJANGO,
            "-d",
            str(workdir),
        ],
        check=True,
    )
    sdist = next(workdir.glob("*.tar.gz"))
    with tarfile.open(sdist) as tar:
        tar.extractall(workdir, filter="data")
    repo = next(p for p in workdir.iterdir() if p.is_dir())
    env = ["-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", *env, "commit", "-q", "-m", "import"], cwd=repo, check=True)
    return repo


async def measure(name: str, repo: Path, cache: Path, rounds: int) -> dict[str, object]:
    spec = SandboxSpec(repo=repo)
    async with make_backend(name, cache) as backend:
        t0 = time.perf_counter()
        box = await backend.open(spec)
        await box.exec(["true"])
        cold = time.perf_counter() - t0
        await box.close()
        opens, execs, forks = [], [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            box = await backend.open(spec)
            await box.exec(["true"])
            opens.append(time.perf_counter() - t0)
            for _ in range(20):
                t0 = time.perf_counter()
                await box.exec(["true"])
                execs.append(time.perf_counter() - t0)
            await box.write_file("bench_marker.txt", "x")
            t0 = time.perf_counter()
            child = await box.fork()
            await child.exec(["true"])
            forks.append(time.perf_counter() - t0)
            await child.close()
            await box.close()
    return {
        "open_to_first_exec_cold_s": round(cold, 4),
        "open_to_first_exec_median_s": round(statistics.median(opens), 4),
        "exec_overhead_median_ms": round(statistics.median(execs) * 1000, 3),
        "exec_overhead_p90_ms": round(sorted(execs)[int(0.9 * len(execs))] * 1000, 3),
        "fork_median_s": round(statistics.median(forks), 4),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--backends", default="docker,bwrap,local")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "sandbox_overhead.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or django_repo(Path(tmp) / "src")
        files = int(
            subprocess.run(
                ["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True
            ).stdout.count("\n")
        )
        results: dict[str, object] = {}
        for name in args.backends.split(","):
            try:
                results[name] = asyncio.run(measure(name, repo, Path(tmp) / "cache", args.rounds))
            except HarnessError as exc:
                results[name] = {"error": str(exc)}
            print(name, json.dumps(results[name]), flush=True)
    report = {
        "benchmark": "sandbox_overhead",
        "machine": describe(),
        "repository": str(args.repo) if args.repo else f"{DJANGO} (PyPI sdist as a git repo)",
        "tracked_files": files,
        "targets": {"open_to_first_exec_s": 1.0, "exec_overhead_ms": 50, "fork_s": 1.0},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
