"""Docker-only guarantees: non-root, cgroup limits, labels, cleanup on exit, crash and prune."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest

from harness.errors import ImageError, SandboxUnavailable
from harness.sandboxes import Limits, SandboxSpec
from harness.sandboxes.checkout import cached_checkout, resolve_commit
from harness.sandboxes.docker import (
    LABEL,
    LABEL_IMAGE,
    LABEL_OWNER,
    LABEL_OWNER_ID,
    DockerBackend,
    connect,
    owner_labels,
)
from harness.sandboxes.owner import current_process
from harness.sandboxes.prune import prune
from tests.fixtures.signals import default_sigint
from tests.sandboxes.conftest import BASE_IMAGE, skip_unless_available

pytestmark = pytest.mark.docker


@pytest.fixture
async def dock(cache_dir: Path) -> AsyncIterator[DockerBackend]:
    skip_unless_available("docker")
    async with DockerBackend(cache_dir) as be:
        yield be


def containers_of(owner: str) -> list[str]:
    client = docker.from_env()
    try:
        found = client.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})
        return [c.name for c in found]
    finally:
        client.close()


async def test_runs_as_non_root_with_labels(dock: DockerBackend, repo: Path) -> None:
    async with await dock.open(SandboxSpec(repo=repo)) as box:
        res = await box.exec("id -u; touch /etc/x 2>&1 || echo denied")
        assert res.stdout.splitlines()[0] == "1000" and "denied" in res.stdout
        assert box.container.labels[LABEL] == "1"  # type: ignore[attr-defined]
        name = box.container.name  # type: ignore[attr-defined]
    client = docker.from_env()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(name)
    client.close()


async def test_fork_bomb_is_contained(dock: DockerBackend, repo: Path) -> None:
    spec = SandboxSpec(repo=repo, limits=Limits(pids=128, memory_mb=512))
    async with await dock.open(spec) as box:
        res = await box.exec("bomb() { bomb | bomb & }; bomb; sleep 3", timeout=5)
        assert "Resource temporarily unavailable" in res.stderr  # the pids limit held
        after = await box.exec("echo alive; ps -e --no-headers | wc -l", timeout=30)
        assert after.stdout.startswith("alive\n")
        assert int(after.stdout.split()[1]) < 10  # the bomb did not outlive its exec


async def test_memory_hog_is_killed(dock: DockerBackend, repo: Path) -> None:
    spec = SandboxSpec(repo=repo, limits=Limits(memory_mb=256))
    async with await dock.open(spec) as box:
        res = await box.exec(
            ["python3", "-c", "b = bytearray(2 * 1024**3); print('allocated')"], timeout=60
        )
        assert res.exit_code != 0 and "allocated" not in res.stdout
        assert (await box.exec("echo alive")).stdout == "alive\n"


async def test_missing_image_is_actionable(dock: DockerBackend, repo: Path) -> None:
    with pytest.raises(ImageError, match="not present"):
        await dock.open(SandboxSpec(repo=repo, image="harness-no-such-image:1"))


def test_no_engine_names_the_way_out() -> None:
    def factory() -> docker.DockerClient:
        return docker.DockerClient(base_url="unix:///nonexistent/docker.sock")

    with pytest.raises(SandboxUnavailable) as info:
        connect(factory)
    assert "no Docker engine" in info.value.message
    assert info.value.hint and "--backend bwrap" in info.value.hint and "dockerd" in info.value.hint


def test_cli_without_engine_exits_cleanly(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "HARNESS_CACHE_DIR": str(tmp_path),
    }
    res = subprocess.run(
        [sys.executable, "-m", "harness", "sandbox", "exec", "--", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    assert "no Docker engine" in res.stderr and "--backend bwrap" in res.stderr
    assert "Traceback" not in res.stderr


def _spawn_cli(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "sandbox", "exec", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,  # some tests interrupt it with SIGINT
    )


def _wait_for_containers(owner: str, present: bool, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        names = containers_of(owner)
        if bool(names) == present or time.monotonic() > deadline:
            return names
        time.sleep(0.2)


def _wait_for_process(container_name: str, cmdline: str, timeout: float = 30.0) -> None:
    client = docker.from_env()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(docker.errors.APIError):  # 409: created, not started yet
                top = client.containers.get(container_name).top()
                if any(cmdline in " ".join(row) for row in top.get("Processes") or []):
                    return
            time.sleep(0.2)
    finally:
        client.close()
    raise AssertionError(f"{cmdline!r} never ran in {container_name}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_container_left_after_interrupt_or_crash(tmp_path: Path, sig: signal.Signals) -> None:
    skip_unless_available("docker")
    proc = _spawn_cli(tmp_path, "--", "sleep", "300")
    owner = f"{os.uname().nodename}:{proc.pid}"
    names = _wait_for_containers(owner, present=True)
    assert names, "the sandbox never started"
    _wait_for_process(names[0], "sleep 300")  # the lease is held once the command runs
    proc.send_signal(sig)
    proc.wait(timeout=30)
    if sig != signal.SIGKILL:
        assert proc.returncode == 130
    # After SIGKILL nothing runs our cleanup: the agent's lease drops and auto-remove acts.
    assert _wait_for_containers(owner, present=False) == []


def test_prune_removes_only_orphans() -> None:
    skip_unless_available("docker")
    client = docker.from_env()
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = os.uname().nodename
    # A label of this test's own, so that --all below touches no one else's sandboxes.
    mine = f"harness.test={uuid.uuid4().hex}"
    key, value = mine.split("=")
    me = current_process()
    assert me is not None
    gone = f"{me.boot_id}/{me.pidns}/{dead.pid}/1"  # the exited process, by its unreusable id
    orphan = client.containers.run(
        BASE_IMAGE,
        ["sleep", "300"],
        detach=True,
        labels={LABEL: "1", LABEL_OWNER: f"{host}:{dead.pid}", LABEL_OWNER_ID: gone, key: value},
    )
    alive = client.containers.run(
        BASE_IMAGE,
        ["sleep", "300"],
        detach=True,
        labels={LABEL: "1", **owner_labels(), key: value},
    )
    try:
        removed = prune(client, label=mine)
        assert f"container {orphan.name}" in removed
        assert f"container {alive.name}" not in removed
        alive.reload()
        assert alive.status == "running"
        assert prune(client, everything=True, label=mine) == [f"container {alive.name}"]
    finally:
        for c in (orphan, alive):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)
        client.close()


def test_cli_exec_streams_and_passes_exit_codes(tmp_path: Path, repo: Path) -> None:
    skip_unless_available("docker")
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    base = [sys.executable, "-m", "harness", "sandbox", "exec", "--repo", str(repo)]
    res = subprocess.run(
        [*base, "--", "cat calc.py; echo oops >&2; exit 7"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 7 and "return a - b" in res.stdout and "oops" in res.stderr
    res = subprocess.run(
        [*base, "--timeout", "1", "--", "sleep", "30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 124 and "timed out" in res.stderr


def test_base_image_has_tools_user_and_ca(tmp_path: Path) -> None:
    skip_unless_available("docker")
    client = docker.from_env()
    out = client.containers.run(
        BASE_IMAGE,
        [
            "bash",
            "-c",
            "python3 -V && git --version && patch --version | head -1 && "
            "python3 -m venv /tmp/v && id sandbox && echo $PIP_CERT",
        ],
        remove=True,
        user="1000:1000",
    ).decode()
    client.close()
    assert "Python 3" in out and "git version" in out and "GNU patch" in out
    assert "uid=1000(sandbox)" in out and "ca-certificates.crt" in out


async def test_a_snapshot_left_by_an_older_harness_is_not_reused(
    dock: DockerBackend, repo: Path, cache_dir: Path
) -> None:
    """Before commands ran as uid 1000, snapshots held a root-only work tree under a key
    without a format: one left on the engine must not be taken for today's."""
    client = docker.from_env()
    try:
        base = client.images.get(BASE_IMAGE)
        checkout = await cached_checkout(repo, await resolve_commit(repo, "HEAD"), cache_dir)
        old_key = hashlib.sha256(f"{base.id}|{checkout}|/testbed".encode()).hexdigest()[:20]
        builder = client.containers.create(
            base.id, command=["sh", "-c", "mkdir -p /testbed && chmod 700 /testbed"], user="0"
        )
        try:
            builder.start()
            builder.wait()
            old = builder.commit(
                repository="harness-snapshot",
                tag=f"old-{old_key}",
                conf={"Labels": {LABEL: "1", LABEL_IMAGE: f"snapshot-{old_key}"}},
            )
        finally:
            builder.remove(force=True)
        try:
            async with await dock.open(SandboxSpec(repo=repo)) as box:
                res = await box.exec("git rev-parse HEAD && ls")
                assert res.ok, res.output
                assert box.base_commit is not None
        finally:
            client.images.remove(old.id, force=True)
    finally:
        client.close()
