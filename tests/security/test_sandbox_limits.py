"""Attacks on resource limits: a fork bomb, processes that together exceed the memory limit,
writes past the disk limit (issue 12, item 3). The limits are small and every attack stops by
itself, so a broken limit costs the machine at most a few hundred processes or megabytes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from harness.sandboxes import Limits, SandboxBackend, SandboxSpec, make_backend
from tests.sandboxes.conftest import skip_unless_available

DISK_MB = 32

# Forks up to 400 children (each sleeps, holding its slot) and prints how many it got.
FORKS = """
import os, time
n = 0
for _ in range(400):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
print(n, flush=True)
"""

# Four children of 150 MB each (each well under a per-process cap of 256 MB) that hold
# their memory for 3 s; prints how many held it to the end.
HOGS = """
import os, sys, time
kids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        block = b"x" * (150 << 20)
        time.sleep(3)
        os._exit(0)
    kids.append(pid)
print(sum(os.waitpid(pid, 0)[1] == 0 for pid in kids), flush=True)
"""


async def test_fork_bomb_is_bounded(backend: SandboxBackend, repo: Path) -> None:
    spec = SandboxSpec(repo=repo, limits=Limits(pids=64, memory_mb=512))
    async with await backend.open(spec) as box:
        res = await box.exec(["python3", "-c", FORKS], timeout=60)
        assert 0 < int(res.stdout) < 64, res.output
        after = await box.exec("echo alive; ps -e --no-headers | wc -l", timeout=30)
        assert after.stdout.startswith("alive\n")
        assert int(after.stdout.split()[1]) < 10  # the children did not outlive their exec
        res = await box.exec("bomb() { bomb | bomb & }; bomb; sleep 2", timeout=4)
        assert (await box.exec("echo alive", timeout=30)).stdout == "alive\n"


async def test_memory_is_limited_in_total(backend: SandboxBackend, repo: Path) -> None:
    spec = SandboxSpec(repo=repo, limits=Limits(memory_mb=256))
    async with await backend.open(spec) as box:
        res = await box.exec(["python3", "-c", HOGS], timeout=120)
        # 600 MB cannot be held at once under 256 MB: at most one hog lasts (or the parent
        # itself is the one killed, which also ends the attack).
        assert res.exit_code != 0 or int(res.stdout) <= 1, res.output
        assert (await box.exec("echo alive", timeout=30)).stdout == "alive\n"


async def test_tmp_is_bounded(backend: SandboxBackend, repo: Path) -> None:
    spec = SandboxSpec(repo=repo, limits=Limits(disk_mb=DISK_MB))
    async with await backend.open(spec) as box:
        res = await box.exec(
            f"dd if=/dev/zero of=/tmp/fill bs=1M count={3 * DISK_MB} 2>&1; "
            "stat -c %s /tmp/fill; df -m /tmp | tail -1",
            timeout=120,
        )
        written = int(res.stdout.splitlines()[-2])
        assert written <= DISK_MB << 20, res.output
        assert (await box.exec("rm /tmp/fill; echo alive")).stdout == "alive\n"


@pytest.mark.bwrap
async def test_bwrap_work_tree_is_bounded(cache_dir: Path, repo: Path) -> None:
    skip_unless_available("bwrap")
    spec = SandboxSpec(repo=repo, limits=Limits(disk_mb=DISK_MB))
    async with make_backend("bwrap", cache_dir) as be, await be.open(spec) as box:
        res = await box.exec(
            "for i in 1 2 3; do dd if=/dev/zero of=fill$i bs=1M count=30 2>&1; done; "
            "du -sbc fill* | tail -1",
            timeout=120,
        )
        assert "No space left on device" in res.stdout
        assert int(res.stdout.split()[-2]) <= DISK_MB << 20, res.output


@pytest.mark.docker
async def test_docker_disk_is_bounded(cache_dir: Path, repo: Path) -> None:
    skip_unless_available("docker")
    spec = SandboxSpec(repo=repo, limits=Limits(disk_mb=DISK_MB))
    async with make_backend("docker", cache_dir) as be, await be.open(spec) as box:
        # One file past the limit fails outright.
        res = await box.exec(f"dd if=/dev/zero of=big bs=1M count={2 * DISK_MB}; stat -c %s big")
        assert int(res.stdout.split()[-1]) <= DISK_MB << 20, res.output
        await box.exec("rm big")
        # Many files under it each: the engine's quota, or the watchdog, stops the sandbox.
        res = await box.exec(
            "for i in $(seq 8); do dd if=/dev/zero of=fill$i bs=1M count=30 2>&1; done",
            timeout=120,
        )
        deadline = time.monotonic() + 60
        while True:
            res = await box.exec("echo alive")
            if res.stdout != "alive\n" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert res.exit_code != 0, "the sandbox kept writing past its disk limit"
        assert f"over its {DISK_MB} MB limit" in res.stderr or "No space" in res.stderr
