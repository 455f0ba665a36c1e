"""Docker backend: one container per sandbox, networking off, cgroup limits, non-root user.

The work tree lives in the container's own filesystem, seeded from a cached snapshot image
per (base image, repo, commit); forking commits the container's layer (tens of ms) and starts
a new container from it. Every blocking SDK call runs in a worker thread.

The agent is the container's only root process, holding just CAP_SETUID/SETGID; commands run
as the sandbox user (uid 1000) with no capability. Disk: /tmp is a size-limited tmpfs; the
writable layer is bounded by the engine (`--storage-opt size`, overlay2 on xfs with pquota)
where it can, else by a watchdog that stops the container once the layer outgrows the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import tarfile
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import ImageError, SandboxError, SandboxUnavailable
from harness.sandboxes.base import CA_ENV, AgentSandbox, SandboxSpec
from harness.sandboxes.channel import AgentChannel, agent_script_path
from harness.sandboxes.checkout import cached_checkout, resolve_commit
from harness.sandboxes.owner import current_process
from harness.tempdirs import drop_tempdir, hold_tempdir

LABEL = "harness.sandbox"  # on every container and image this backend creates
LABEL_OWNER = "harness.owner"  # "<hostname>:<pid>" of the process that created it (for people)
LABEL_OWNER_ID = "harness.owner.id"  # its ProcessId, which no other process shares (for prune)
LABEL_IMAGE = "harness.image"  # "base" | "snapshot" | "fork"
SANDBOX_USER = "1000:1000"  # who commands run as (environment images own /testbed by it)
# Part of a snapshot's cache key: a snapshot built by a harness whose layout differs (before
# commands ran as SANDBOX_USER its work tree was root's, unreadable now) is never reused.
SNAPSHOT_FORMAT = f"2:{SANDBOX_USER}"
AGENT_CAPS = ["SETUID", "SETGID"]  # the agent's only capabilities: it drops to SANDBOX_USER
DISK_POLL_S = 1.0  # how often the watchdog measures a writable layer without an engine quota
DEFAULT_IMAGE = "harness-base:latest"
CA_PATH = "/etc/ssl/certs/harness-ca-bundle.crt"
# Labels of images committed from containers. A commit inherits its base image's labels;
# blanking the base's recipe key keeps a snapshot from ever passing for a base image.
_DERIVED = {LABEL: "1", "harness.base.key": ""}
_NO_OWNER = {LABEL_OWNER: "", LABEL_OWNER_ID: ""}
NO_ENGINE_HINT = (
    "start a Docker engine (`sudo systemctl start docker`, or `sudo dockerd &` on machines "
    "without systemd; `.ci/run` does this), or use `--backend bwrap` (bubblewrap) instead"
)


def owner_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_labels() -> dict[str, str]:
    """The labels that tie a container or image to this process (see harness.sandboxes.prune)."""
    process = current_process()
    return {LABEL_OWNER: owner_label(), LABEL_OWNER_ID: str(process) if process else ""}


def connect(factory: Callable[[], Any] | None = None) -> Any:
    """A docker client that answered a ping; SandboxUnavailable with a hint otherwise."""
    import docker  # local import: `import harness` stays cheap

    try:
        client = (factory or docker.from_env)()
        client.ping()
    except Exception as exc:  # the SDK raises DockerException, requests errors, OSError
        raise SandboxUnavailable(f"no Docker engine answers ({exc})", hint=NO_ENGINE_HINT) from exc
    return client


class DockerBackend:
    """Opens docker sandboxes; `aclose` removes whatever is still open."""

    name = "docker"

    def __init__(
        self,
        cache_dir: Path,
        *,
        default_image: str = DEFAULT_IMAGE,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.default_image = default_image
        self._factory = client_factory
        self._client: Any = None
        self._open: set[DockerSandbox] = set()
        self._fork_images: list[str] = []
        self._snapshot_locks: dict[str, asyncio.Lock] = {}
        # Whether the engine enforces `--storage-opt size` (None: not tried yet).
        self.disk_quota: bool | None = None

    async def __aenter__(self) -> DockerBackend:
        await self.client()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def client(self) -> Any:
        if self._client is None:
            self._client = await asyncio.to_thread(connect, self._factory)
        return self._client

    async def open(self, spec: SandboxSpec) -> DockerSandbox:
        client = await self.client()
        image_name = spec.image or self.default_image
        image = await asyncio.to_thread(_get_image, client, image_name)
        commit = None
        if spec.repo is not None:
            commit = await resolve_commit(spec.repo, spec.commit)
            image_id = await self._snapshot(client, image.id, spec, commit)
        else:
            image_id = image.id
        box = await self._start(client, spec, image_id, owned_image=None)
        return box

    async def _snapshot(self, client: Any, base_id: str, spec: SandboxSpec, commit: str) -> str:
        assert spec.repo is not None
        checkout = await cached_checkout(spec.repo, commit, self.cache_dir)
        key = snapshot_key(base_id, checkout, spec.workdir)
        lock = self._snapshot_locks.setdefault(key, asyncio.Lock())
        async with lock:
            found = await asyncio.to_thread(
                client.images.list, filters={"label": f"{LABEL_IMAGE}=snapshot-{key}"}
            )
            if found:
                return str(found[0].id)
            return await asyncio.to_thread(_build_snapshot, client, base_id, checkout, spec, key)

    async def _start(
        self, client: Any, spec: SandboxSpec, image_id: str, owned_image: str | None
    ) -> DockerSandbox:
        root = hold_tempdir("harness-docker-")
        run_dir = root / "run"
        run_dir.mkdir()
        # The agent (container root, no DAC capability) creates its socket here; the sandbox
        # user must not be able to replace it. Run by root: the directory is root's alone.
        # Run by a user: sticky, so the sandbox user cannot rename the agent's socket.
        as_root = os.geteuid() == 0
        run_dir.chmod(0o700 if as_root else 0o1777)
        volumes: dict[str, dict[str, str]] = {
            str(run_dir): {"bind": "/.harness/run", "mode": "rw"},
            str(agent_script_path()): {"bind": "/.harness/agent.py", "mode": "ro"},
        }
        env = dict(spec.env)
        if spec.ca_bundle is not None:
            volumes[str(spec.ca_bundle.resolve())] = {"bind": CA_PATH, "mode": "ro"}
            env.update({name: CA_PATH for name in CA_ENV})
        disk = spec.limits.disk_mb
        tmpfs = f"rw,exec,nosuid,nodev,size={disk}m,mode=1777"
        kwargs: dict[str, Any] = {
            "image": image_id,
            "command": [
                "/usr/bin/python3",
                "/.harness/agent.py",
                "--socket",
                "/.harness/run/agent.sock",
                "--workdir",
                spec.workdir,
                "--run-as",
                SANDBOX_USER,
                "--socket-mode",
                "600" if as_root else "666",
                "--rlimit",
                f"fsize={disk << 20}",
            ],
            "detach": True,
            "auto_remove": True,
            "init": True,
            "user": "0:0",
            "working_dir": spec.workdir,
            "network_mode": "bridge" if spec.network else "none",
            "mem_limit": f"{spec.limits.memory_mb}m",
            "memswap_limit": f"{spec.limits.memory_mb}m",
            "nano_cpus": int(spec.limits.cpus * 1e9),
            "pids_limit": spec.limits.pids,
            "cap_drop": ["ALL"],
            "cap_add": AGENT_CAPS,
            "security_opt": ["no-new-privileges"],
            "tmpfs": {"/tmp": tmpfs, "/var/tmp": tmpfs},
            "labels": {LABEL: "1", **owner_labels()},
            "environment": env,
            "volumes": volumes,
            "name": f"harness-{uuid.uuid4().hex[:12]}",
        }
        if self.disk_quota is not False:
            kwargs["storage_opt"] = {"size": f"{disk}m"}
        try:
            container = await asyncio.to_thread(self._run, client, kwargs)
        except Exception as exc:
            drop_tempdir(root)
            raise SandboxError(f"could not start a container from {image_id[:19]}: {exc}") from exc
        box = DockerSandbox(self, spec, container, root, owned_image)
        try:
            await box.wait_ready()
            await box.channel.setup(src=None, scratch=box.scratch, own_workdir=False)
            if spec.repo is not None:
                await box.init_base()
        except BaseException:
            await box.close()
            raise
        if not self.disk_quota:
            box.watch_disk(client)
        self._open.add(box)
        return box

    def _run(self, client: Any, kwargs: dict[str, Any]) -> Any:
        """containers.run; the first refusal of `storage_opt` turns it off for this backend."""
        import docker.errors

        try:
            container = client.containers.run(**kwargs)
        except docker.errors.APIError as exc:
            if "storage_opt" not in kwargs or "storage-opt" not in str(exc):
                raise
            self.disk_quota = False  # overlay2 on ext4 and friends: the watchdog bounds it
            container = client.containers.run(
                **{k: v for k, v in kwargs.items() if k != "storage_opt"}
            )
        else:
            if "storage_opt" in kwargs:
                self.disk_quota = True
        return container

    async def fork(self, parent: DockerSandbox) -> DockerSandbox:
        client = await self.client()
        image = await asyncio.to_thread(
            parent.container.commit,
            repository="harness-fork",
            tag=uuid.uuid4().hex[:12],
            conf={"Labels": {**_DERIVED, **owner_labels(), LABEL_IMAGE: "fork"}},
        )
        self._fork_images.append(image.id)
        child = await self._start(client, parent.spec, image.id, owned_image=image.id)
        child.base_commit = parent.base_commit
        return child

    def forget(self, box: DockerSandbox) -> None:
        self._open.discard(box)

    async def aclose(self) -> None:
        for box in list(self._open):
            await box.close()
        if self._client is not None:
            # Children before parents: a fork of a fork depends on its parent's image.
            for image_id in reversed(self._fork_images):
                await asyncio.to_thread(_remove_image, self._client, image_id)
            self._fork_images.clear()
            await asyncio.to_thread(self._client.close)
            self._client = None


class DockerSandbox(AgentSandbox):
    def __init__(
        self,
        backend: DockerBackend,
        spec: SandboxSpec,
        container: Any,
        root: Path,
        owned_image: str | None,
    ) -> None:
        super().__init__(
            backend,
            spec,
            AgentChannel(root / "run" / "agent.sock"),
            spec.workdir,
            "/tmp/.harness",
        )
        self.backend: DockerBackend = backend
        self.container = container
        self.root = root
        self.owned_image = owned_image
        self._watch: asyncio.Task[None] | None = None

    @property
    def channel(self) -> AgentChannel:
        return self._channel

    def watch_disk(self, client: Any) -> None:
        """Stop the container once its writable layer outgrows the disk limit."""
        self._watch = asyncio.create_task(self._watch_disk(client))

    async def _watch_disk(self, client: Any) -> None:
        limit = self.spec.limits.disk_mb
        while not self.closed:
            await asyncio.sleep(DISK_POLL_S)
            size = await asyncio.to_thread(_layer_size, client, self.container.id)
            if size is not None and size > limit << 20:
                self.stopped = (
                    f"the sandbox wrote {size >> 20} MB to its disk, over its {limit} MB "
                    "limit, and was stopped"
                )
                await asyncio.to_thread(_kill, self.container)
                return

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self._channel.wait_ready(timeout=1.0)
                return
            except SandboxError:
                status = await asyncio.to_thread(_status, self.container)
                if status in ("exited", "dead", "gone") or time.monotonic() > deadline:
                    logs = await asyncio.to_thread(_logs, self.container)
                    raise SandboxError(
                        f"the sandbox agent did not start in container {self.container.name} "
                        f"(status {status})" + (f":\n{logs}" if logs else ""),
                        hint="the image needs /usr/bin/python3; images from "
                        "`harness sandbox build-base` have it",
                    ) from None

    async def _release(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await asyncio.to_thread(_remove_container, self.container)
        client = self.backend._client
        if (
            self.owned_image is not None
            and client is not None
            and await asyncio.to_thread(_remove_image, client, self.owned_image)
        ):
            with contextlib.suppress(ValueError):
                self.backend._fork_images.remove(self.owned_image)
        drop_tempdir(self.root)


def _get_image(client: Any, name: str) -> Any:
    import docker.errors

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        hint = (
            "build it with `harness sandbox build-base`"
            if name == DEFAULT_IMAGE
            else ("check the name with `docker images`")
        )
        raise ImageError(f"image {name!r} is not present in the Docker engine", hint=hint) from None


def snapshot_key(base_id: str, checkout: Path, workdir: str) -> str:
    """The label that finds a snapshot of `checkout` on `base_id` built by this harness."""
    text = f"{SNAPSHOT_FORMAT}|{base_id}|{checkout}|{workdir}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _build_snapshot(client: Any, base_id: str, checkout: Path, spec: SandboxSpec, key: str) -> str:
    """Copy a checkout into a container's filesystem (owned by the sandbox user); commit."""
    uid, gid = (int(x) for x in SANDBOX_USER.split(":"))
    arc_root = spec.workdir.strip("/")

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
        return info

    builder = client.containers.create(
        base_id, command=["true"], labels={LABEL: "1", **owner_labels()}
    )
    try:
        with tempfile.TemporaryFile() as fh:
            with tarfile.open(fileobj=fh, mode="w") as tar:
                tar.add(str(checkout), arcname=arc_root, filter=owned)
            fh.seek(0)
            if not builder.put_archive("/", fh):
                raise ImageError(f"could not copy {checkout} into a container")
        image = builder.commit(
            repository="harness-snapshot",
            tag=key,
            conf={
                # A snapshot is a shared cache: it has no owner, whoever built it.
                "Labels": {**_DERIVED, **_NO_OWNER, LABEL_IMAGE: f"snapshot-{key}"},
                "WorkingDir": spec.workdir,
            },
        )
        return str(image.id)
    finally:
        _remove_container(builder)


def _layer_size(client: Any, container_id: str) -> int | None:
    """Bytes in the container's writable layer (the engine walks it), None when gone."""
    try:
        found = client.api.containers(all=True, size=True, filters={"id": container_id})
    except Exception:
        return None
    return int(found[0].get("SizeRw") or 0) if found else None


def _kill(container: Any) -> None:
    with contextlib.suppress(Exception):
        container.kill()


def _status(container: Any) -> str:
    try:
        container.reload()
    except Exception:
        return "gone"
    return str(container.status)


def _logs(container: Any) -> str:
    try:
        return str(container.logs(tail=20).decode(errors="replace").strip())
    except Exception:
        return ""


def _remove_container(container: Any, wait_s: float = 30.0) -> None:
    """Remove the container and return once it is gone (auto-remove may be racing us)."""
    import docker.errors

    try:
        container.remove(force=True)
        return
    except docker.errors.NotFound:
        return
    except docker.errors.APIError:  # 409: a removal (auto-remove) is already in progress
        pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            container.reload()
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            pass
        time.sleep(0.1)


def _remove_image(client: Any, image_id: str) -> bool:
    import docker.errors

    try:
        client.images.remove(image_id, force=True)
    except docker.errors.ImageNotFound:
        return True
    except docker.errors.APIError as exc:  # still used by a child image or container
        warnings.warn(f"could not remove image {image_id[:19]}: {exc}", stacklevel=1)
        return False
    return True
