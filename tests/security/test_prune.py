"""`harness sandbox prune` on a Docker engine shared by several hosts: it keeps what a live
owner anywhere uses, and removes every leftover of a killed run (created containers, host
temp directories), whoever reused the dead owner's pid. Real engine, real harness processes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from harness.sandboxes.docker import (
    LABEL,
    LABEL_IMAGE,
    LABEL_OWNER,
    LABEL_OWNER_ID,
    owner_labels,
)
from harness.sandboxes.owner import ProcessId, current_process
from harness.sandboxes.prune import prune, prune_host
from tests.conftest import BASE_IMAGE, docker_ready, git, make_repo


@pytest.fixture
def client(request: pytest.FixtureRequest) -> Iterator[docker.DockerClient]:
    request.applymarker(pytest.mark.docker)  # under CI=true a skip fails
    if reason := docker_ready():
        pytest.skip(f"docker unavailable: {reason}")
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture
def mine(client: docker.DockerClient) -> Iterator[str]:
    """A label of this test's own: prune(label=...) then touches no one else's sandboxes."""
    label = f"harness.test={uuid.uuid4().hex}"
    yield label
    for container in client.containers.list(all=True, filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def this_process() -> ProcessId:
    me = current_process()
    assert me is not None, "/proc does not show this process"
    return me


def harness(tmp_path: Path, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """`python -m harness ARGS` with its own temp and cache directories (under tmp_path)."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path / "tmp"),
        "HARNESS_CACHE_DIR": str(tmp_path / "cache"),
    }
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "harness", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def containers(client: docker.DockerClient, owner: str, status: str | None = None) -> list[str]:
    filters: dict[str, object] = {"label": f"{LABEL_OWNER}={owner}"}
    if status is not None:
        filters["status"] = status
    found = client.containers.list(all=True, filters=filters, ignore_removed=True)
    return [c.name for c in found]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def runs_in(client: docker.DockerClient, name: str, cmdline: str) -> bool:
    try:
        top = client.containers.get(name).top()
    except docker.errors.APIError:
        return False
    return any(cmdline in " ".join(row) for row in top.get("Processes") or [])


def kill_when(
    proc: subprocess.Popen[bytes], caught: Callable[[], bool], missed: Callable[[], bool]
) -> bool:
    """SIGKILL `proc` at a moment `caught()` holds, judged while it is stopped (so nothing
    changes between the look and the kill); False when `missed()` came first."""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGSTOP)
            if caught():
                return True
            if missed():
                return False
            os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.stderr is not None
    raise AssertionError(f"harness ended (or hung) first: {proc.stderr.read().decode()[-2000:]}")


def test_live_sandbox_of_another_host_survives_prune(
    tmp_path: Path, client: docker.DockerClient
) -> None:
    # Another host sharing the engine: its own hostname and pid namespace (as a CI job
    # container with the engine's socket mounted has), its harness as pid 1 there.
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to make a second host's namespaces")
    host = f"other-{uuid.uuid4().hex[:8]}"
    become = (
        f"import socket,sys,os; socket.sethostname({host!r}); os.execv(sys.argv[1], sys.argv[1:])"
    )
    unshare = ("unshare", "--uts", "--pid", "--fork", "--mount-proc")
    proc = harness(
        tmp_path,
        "sandbox",
        "exec",
        "--",
        "sleep",
        "300",
        prefix=(*unshare, sys.executable, "-c", become),
    )
    owner = f"{host}:1"
    try:
        wait_for(lambda: bool(containers(client, owner, "running")), "the other host's sandbox")
        (name,) = containers(client, owner)
        wait_for(lambda: runs_in(client, name, "sleep 300"), "its command")
        assert prune(client, label=f"{LABEL_OWNER}={owner}", grace_s=0) == []
        assert client.containers.get(name).status == "running" and runs_in(
            client, name, "sleep 300"
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    # Its owner gone, the sandbox goes by itself: the agent's lease connection closed.
    wait_for(lambda: containers(client, owner) == [], "the sandbox to end with its owner", 60)


def test_dead_owner_whose_pid_was_reused_is_removed(client: docker.DockerClient, mine: str) -> None:
    me = this_process()
    # Left by the process that had our pid before us: same boot, namespace and pid, but it
    # started earlier. Its pid is alive (it is ours), its owner is not.
    reused = ProcessId(me.boot_id, me.pidns, me.pid, me.start - 1)
    key, value = mine.split("=")
    dead = {
        LABEL: "1",
        LABEL_OWNER: f"{socket.gethostname()}:{me.pid}",
        LABEL_OWNER_ID: str(reused),
        key: value,
    }
    created = client.containers.create(BASE_IMAGE, ["sleep", "300"], labels=dead)
    running = client.containers.run(BASE_IMAGE, ["sleep", "300"], labels=dead, detach=True)
    live = client.containers.run(
        BASE_IMAGE, ["sleep", "300"], labels={LABEL: "1", **owner_labels(), key: value}, detach=True
    )
    removed = prune(client, label=mine)
    assert sorted(removed) == sorted([f"container {created.name}", f"container {running.name}"])
    live.reload()
    assert live.status == "running"


def test_fork_image_of_a_dead_owner_goes_and_a_live_owners_stays(
    client: docker.DockerClient, mine: str
) -> None:
    me = this_process()
    key, value = mine.split("=")
    reused = ProcessId(me.boot_id, me.pidns, me.pid, me.start - 1)
    fork = {LABEL: "1", LABEL_IMAGE: "fork", key: value}
    # What the process that had our pid before us left: both owner labels name "our" pid.
    gone = {LABEL_OWNER: f"{socket.gethostname()}:{me.pid}", LABEL_OWNER_ID: str(reused)}
    box = client.containers.create(BASE_IMAGE, ["true"], labels={key: value})
    try:
        dead = box.commit(
            "harness-fork",
            uuid.uuid4().hex[:12],
            conf={"Labels": {**fork, **gone}},
        )
        live = box.commit(
            "harness-fork", uuid.uuid4().hex[:12], conf={"Labels": {**fork, **owner_labels()}}
        )
    finally:
        box.remove(force=True)
    try:
        assert prune(client, label=mine) == [f"image {dead.id.removeprefix('sha256:')[:12]} (fork)"]
        assert client.images.get(live.id).id == live.id
    finally:
        for image in (dead, live):
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(image.id, force=True)


def test_foreign_leftovers_go_after_the_grace_period(
    client: docker.DockerClient, mine: str
) -> None:
    key, value = mine.split("=")
    me = this_process()
    foreign = {
        LABEL: "1",
        LABEL_OWNER: "elsewhere:77",
        LABEL_OWNER_ID: f"another-boot/{me.pidns}/77/5",
        key: value,
    }
    created = client.containers.create(BASE_IMAGE, ["sleep", "300"], labels=foreign)
    running = client.containers.run(BASE_IMAGE, ["sleep", "300"], labels=foreign, detach=True)
    # Younger than the grace period: a live owner may be about to start it.
    assert prune(client, label=mine, grace_s=3600) == []
    # Older: a never-started container is a leftover; a running one never is (its lease).
    assert prune(client, label=mine, grace_s=0) == [f"container {created.name}"]
    running.reload()
    assert running.status == "running"


def test_prune_after_kill_9_removes_created_containers_and_temp_dirs(
    tmp_path: Path, client: docker.DockerClient
) -> None:
    # Big enough that checking it out and copying it into a snapshot take a moment.
    repo = tmp_path / "repo"
    blob = "x = '" + "0123456789abcdef" * 500 + "'\n"
    make_repo(repo, {f"pkg{i // 200}/mod{i}.py": blob for i in range(3000)})
    host = socket.gethostname()
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    owners: list[str] = []

    def run_until(caught: Callable[[str], bool], missed: Callable[[str], bool]) -> str:
        """Kill -9 a sandbox exec at the moment `caught` (a fresh commit per try)."""
        for attempt in range(5):
            make_repo(repo, {"attempt.txt": f"{uuid.uuid4()}\n"}, message=f"try {attempt}")
            commit = git(repo, "rev-parse", "HEAD")
            proc = harness(
                tmp_path,
                "sandbox",
                "exec",
                "--repo",
                str(repo),
                "--commit",
                commit,
                "--",
                "sleep",
                "300",
            )
            owner = f"{host}:{proc.pid}"
            owners.append(owner)
            if kill_when(proc, functools.partial(caught, owner), functools.partial(missed, owner)):
                return owner
        raise AssertionError("never caught the moment to kill")

    def checkouts() -> list[Path]:
        return (
            sorted((cache / "checkouts").glob(".tmp-*")) if (cache / "checkouts").exists() else []
        )

    try:
        # Killed while making the checkout: a half-made cache entry stays.
        before = set(checkouts())
        run_until(lambda o: bool(set(checkouts()) - before), lambda o: bool(containers(client, o)))
        # Killed while copying the work tree into an image: the builder stays "created".
        builder = run_until(
            lambda o: bool(containers(client, o, "created")),
            lambda o: bool(containers(client, o, "running")),
        )
        # Killed while its command runs: the container ends with the lease, its directory stays.
        run_until(
            lambda o: any(
                runs_in(client, n, "sleep 300") for n in containers(client, o, "running")
            ),
            lambda o: False,
        )
        assert containers(client, builder, "created")
        assert list(tmp.glob("harness-docker-*")) and checkouts()

        removed = [
            line for owner in owners for line in prune(client, label=f"{LABEL_OWNER}={owner}")
        ]
        removed += prune_host(cache, [tmp])
        assert all(containers(client, owner) == [] for owner in owners), removed
        assert list(tmp.glob("harness-*")) == [] and checkouts() == [], removed
    finally:
        for owner in owners:
            for name in containers(client, owner):
                with contextlib.suppress(docker.errors.APIError):
                    client.containers.get(name).remove(force=True)


def test_temp_dir_of_a_live_process_is_kept_until_it_dies(tmp_path: Path) -> None:
    checkouts = tmp_path / "cache" / "checkouts"
    checkouts.mkdir(parents=True)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = (
        "import sys, time; from pathlib import Path; from harness.tempdirs import hold_tempdir;"
        "a = hold_tempdir('.tmp-', Path(sys.argv[1]));"
        "b = hold_tempdir('harness-bwrap-', Path(sys.argv[2]));"
        "print(a, b, flush=True);"
        "time.sleep(300)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(checkouts), str(tmp)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    held = [Path(p) for p in proc.stdout.readline().split()]
    try:
        assert prune_host(tmp_path / "cache", [tmp]) == []
        assert all(p.is_dir() for p in held)
    finally:
        proc.kill()
        proc.wait()
    assert sorted(prune_host(tmp_path / "cache", [tmp])) == sorted(f"directory {p}" for p in held)
    assert not any(p.exists() for p in held)


def test_cli_prune_takes_a_dead_owners_leftovers(client: docker.DockerClient, mine: str) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = this_process()
    key, value = mine.split("=")
    labels = {LABEL: "1", LABEL_OWNER_ID: f"{me.boot_id}/{me.pidns}/{dead.pid}/1", key: value}
    leftover = client.containers.create(BASE_IMAGE, ["true"], labels=labels)
    cli = [sys.executable, "-m", "harness", "sandbox", "prune"]
    res = subprocess.run([*cli, "--label", mine], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"removed container {leftover.name}", "1 removed"]
    bad = subprocess.run([*cli, "--label", "nokey"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "is not KEY=VALUE" in bad.stderr
