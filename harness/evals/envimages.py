"""Environment images: built locally from install specs in three layers, or official.

Local (harness/evals/dockerfiles.py has the Dockerfiles): a Debian base per suite (from
harness/sandboxes/images.py; the suite picks the Python) with swebench's apt packages; an
env image per (repo, version) with a Python prefix, the spec's packages and the repo installed at
its environment setup commit; and a thin instance image that runs pre_install and install
again at the instance's base commit. Every layer is keyed by its content, built once under
a host lock, and reused. Official: the pre-built `swebench/sweb.eval.x86_64.<id>` images.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import ImageError
from harness.evals.dataset import Instance
from harness.evals.dockerfiles import (
    LABEL_ENV_KEY,
    SETUP_DIFF,
    SWEBENCH_APT,
    env_dockerfile,
    instance_dockerfile,
    scm_version,
    slug,
    suite_dockerfile,
)
from harness.evals.locks import host_lock
from harness.evals.repos import RepoCache
from harness.evals.requirements import environment_yml_requirements, requirements_txt
from harness.evals.specs import EnvSpec, debian_python, pip_requirements
from harness.sandboxes.checkout import git
from harness.sandboxes.docker import LABEL, LABEL_IMAGE, connect
from harness.sandboxes.images import LABEL_KEY, BaseImageRecipe, build_base

ENV_RECIPE_VERSION = "2"
CONDA_ACTIVATE = "source /opt/miniconda3/bin/activate && conda activate testbed"
Log = Callable[[str], None]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
__all__ = ["SETUP_DIFF", "SWEBENCH_APT", "EnvBuildFailed", "EnvImage", "EnvImages", "EnvOptions"]


@dataclass(frozen=True)
class EnvOptions:
    mode: Literal["local", "official"] = "local"
    ca_bundle: Path | None = None  # trusted inside images (TLS proxies); pip needs it to build
    apt_packages: tuple[str, ...] = SWEBENCH_APT
    debian_mirror: str = "http://deb.debian.org/debian"
    official_namespace: str = "swebench"
    rebuild: bool = False  # rebuild env images from scratch (no reuse, no layer cache)
    pull_timeout_s: float = 900.0


@dataclass(frozen=True)
class EnvImage:
    """An image to open sandboxes of one instance from, and how to use it."""

    tag: str
    python_requested: str
    python_used: str
    activate: str = ""  # shell line that puts the environment on PATH ("" = already is)
    setup_diff: str = ""  # path in the image of tracked-file changes the install made
    build_s: float = 0.0  # seconds spent building it now (0 when it was reused)
    env_build_s: float = 0.0  # the env layer's share of build_s (per repo and version)
    log_path: str = ""
    notes: tuple[str, ...] = field(default=())  # substitutions made (Python, conda -> pip)


class EnvBuildFailed(ImageError):
    """An environment image could not be built; `log_path` holds the build log."""

    def __init__(self, message: str, *, log_path: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.log_path = log_path


def official_image(instance_id: str, namespace: str = "swebench") -> str:
    """swebench's published instance image name (docker hub forbids "__": "_1776_")."""
    name = f"{namespace}/sweb.eval.x86_64.{instance_id}:latest".replace("__", "_1776_")
    return name.lower()


class EnvImages:
    """Builds (once) or pulls the environment image of an instance."""

    def __init__(
        self,
        cache_dir: Path,
        repos: RepoCache,
        options: EnvOptions | None = None,
        *,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.repos = repos
        self.options = options or EnvOptions()
        self._factory = client_factory
        self._client: Any = None
        self._rebuilt: set[str] = set()  # tags built by this process (kept with `rebuild`)
        # Builds that failed in this process are not retried for the next instance that
        # shares them (a new process, e.g. a resumed batch, tries again).
        self._failed: dict[str, EnvBuildFailed] = {}
        # Tags this process used per (repo, version), env image last: what `remove` removes.
        self._used: dict[tuple[str, str], list[str]] = {}

    async def client(self) -> Any:
        if self._client is None:
            self._client = await asyncio.to_thread(connect, self._factory)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None

    async def ensure(self, inst: Instance, spec: EnvSpec, log: Log = lambda _: None) -> EnvImage:
        if self.options.mode == "official":
            return await self._official(inst, spec, log)
        return await self._local(inst, spec, log)

    async def _official(self, inst: Instance, spec: EnvSpec, log: Log) -> EnvImage:
        client = await self.client()
        name = official_image(inst.instance_id, self.options.official_namespace)
        env = EnvImage(name, spec.python, spec.python, activate=CONDA_ACTIVATE)
        async with host_lock(self.cache_dir / "evals" / "locks", f"pull-{slug(name)}"):
            try:
                await asyncio.to_thread(client.images.get, name)
                return env
            except Exception:
                pass
            log(f"pulling {name} ...")
            start = time.monotonic()
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(client.images.pull, name), self.options.pull_timeout_s
                )
            except Exception as exc:
                raise EnvBuildFailed(
                    f"could not pull the official image {name}: {str(exc)[:300]}",
                    hint="no registry here? use the default `--images local`",
                ) from None
        return EnvImage(
            name, spec.python, spec.python, CONDA_ACTIVATE, build_s=time.monotonic() - start
        )

    async def _local(self, inst: Instance, spec: EnvSpec, log: Log) -> EnvImage:
        client = await self.client()
        used, suite = debian_python(spec.python)
        notes: list[str] = []
        if used != spec.python:
            notes.append(f"python {spec.python} -> {used} (Debian {suite})")
        base_id = await self._suite_image(client, suite, log)
        source = await self.repos.local(inst.repo, [inst.setup_commit, inst.base_commit])

        # The env image: per (repo, version), shared by its instances.
        checkout = await self.repos.checkout(inst.repo, inst.setup_commit)
        reqs = self._requirements(spec, checkout, notes)
        version = await _scm_version(source, inst.setup_commit)

        def env_file(key: str) -> str:
            return env_dockerfile(base_id, spec, key=key, has_reqs=bool(reqs), version=version)

        name = f"{slug(inst.repo.replace('/', '__'))}-{slug(inst.version)}"
        material = [env_file("-"), reqs, inst.repo, inst.setup_commit]
        env_tag, env_s = await self._keyed_build(
            client,
            name,
            material,
            env_file,
            {"harness-requirements.txt": reqs.encode()},
            {"testbed": checkout},
            log,
        )

        # The instance image: pre_install and install again at the base commit.
        checkout = await self.repos.checkout(inst.repo, inst.base_commit)
        version = await _scm_version(source, inst.base_commit)
        env_id = str((await asyncio.to_thread(client.images.get, env_tag)).id)

        def inst_file(key: str) -> str:
            return instance_dockerfile(env_id, spec, key=key, version=version)

        material = [inst_file("-"), inst.repo, inst.base_commit]
        tag, inst_s = await self._keyed_build(
            client,
            slug(inst.instance_id),
            material,
            inst_file,
            {},
            {"testbed": checkout},
            log,
        )
        used_tags = self._used.setdefault((inst.repo, inst.version), [])
        if tag not in used_tags:
            used_tags.insert(0, tag)  # instance images go before the env image they extend
        if env_tag not in used_tags:
            used_tags.append(env_tag)
        log_path = self._log_path(tag)
        return EnvImage(
            tag,
            spec.python,
            used,
            setup_diff=SETUP_DIFF,
            build_s=env_s + inst_s,
            env_build_s=env_s,
            log_path=str(log_path),
            notes=tuple(notes),
        )

    async def remove(self, repo: str, version: str) -> list[str]:
        """Remove the images of (repo, version) this process built or used: the sandbox
        snapshots made from them, the instance images, then the env image (the Debian
        bases stay). Returns what was removed; an image still in use is left and named."""
        tags = self._used.pop((repo, version), [])
        self._rebuilt.difference_update(tags)
        if not tags:
            return []
        client = await self.client()
        return await asyncio.to_thread(_remove_images, client, tags)

    def _log_path(self, tag: str) -> Path:
        return self.cache_dir / "evals" / "env-logs" / f"{tag.split(':', 1)[1]}.log"

    async def _keyed_build(
        self,
        client: Any,
        name: str,
        material: list[Any],
        dockerfile: Callable[[str], str],
        files: dict[str, bytes],
        dirs: dict[str, Path],
        log: Log,
    ) -> tuple[str, float]:
        """Build `harness-env:<name>-<key>` once; (tag, seconds spent building now)."""
        key = hashlib.sha256(json.dumps([ENV_RECIPE_VERSION, *material]).encode()).hexdigest()
        key = key[:16]
        tag = f"harness-env:{name}-{key[:12]}"
        async with host_lock(self.cache_dir / "evals" / "locks", f"env-{key}"):
            if key in self._failed:
                raise self._failed[key]
            if tag in self._rebuilt or (
                not self.options.rebuild and await asyncio.to_thread(_has_image, client, tag, key)
            ):
                return tag, 0.0
            log_path = self._log_path(tag)
            log(f"building {tag} (log {log_path}) ...")
            start = time.monotonic()
            try:
                await asyncio.to_thread(
                    _docker_build,
                    client,
                    tag,
                    dockerfile(key),
                    files,
                    dirs,
                    log_path,
                    self.options.rebuild,
                )
            except EnvBuildFailed as exc:
                self._failed[key] = exc
                raise
            self._rebuilt.add(tag)
            return tag, time.monotonic() - start

    async def _suite_image(self, client: Any, suite: str, log: Log) -> str:
        """The Debian base of `suite` (built if missing) plus the apt packages."""
        locks = self.cache_dir / "evals" / "locks"
        async with host_lock(locks, f"suite-{suite}"):
            recipe = BaseImageRecipe(
                tag=f"harness-base:{suite}",
                suite=suite,
                mirror=self.options.debian_mirror,
                ca_bundle=self.options.ca_bundle,
            )
            base_id = await asyncio.to_thread(_find_base, client, recipe)
            if base_id is None:
                try:
                    base_id = await build_base(client, recipe, log=log)
                except ImageError as exc:
                    raise EnvBuildFailed(f"base image for Debian {suite}: {exc.message}") from exc
            apt = self.options.apt_packages
            if not apt:
                return base_id
            material = json.dumps([ENV_RECIPE_VERSION, base_id, sorted(apt)])
            key = hashlib.sha256(material.encode()).hexdigest()[:16]
            tag = f"harness-env:{suite}-{key[:12]}"
            if not await asyncio.to_thread(_has_image, client, tag, key):
                log_path = self.cache_dir / "evals" / "env-logs" / f"{suite}-{key[:12]}.log"
                log(f"building {tag} (apt packages, log {log_path}) ...")
                dockerfile = suite_dockerfile(base_id, apt, key)
                await asyncio.to_thread(_docker_build, client, tag, dockerfile, {}, {}, log_path)
            return str((await asyncio.to_thread(client.images.get, tag)).id)

    def _requirements(self, spec: EnvSpec, checkout: Path, notes: list[str]) -> str:
        if spec.packages == "requirements.txt":
            return requirements_txt(checkout, spec.reqs_paths or ("requirements.txt",))
        if spec.packages == "environment.yml":
            notes.append("environment.yml installed with pip (no conda)")
            return environment_yml_requirements(
                checkout, spec.env_yml_paths or ("environment.yml",)
            )
        if spec.packages:
            notes.append("conda packages installed with pip (no conda)")
            return "\n".join(pip_requirements(spec.packages))
        return ""


async def _scm_version(source: Path, commit: str) -> str:
    describe = await git("describe", "--tags", "--long", commit, cwd=source, check=False)
    return scm_version(describe)


def _find_base(client: Any, recipe: BaseImageRecipe) -> str | None:
    """The base image built from `recipe`. Images made from it (snapshots, forks, env
    images) inherit its key label, so the `harness.image=base` label must match too."""
    found = client.images.list(
        all=True, filters={"label": [f"{LABEL_KEY}={recipe.key()}", f"{LABEL_IMAGE}=base"]}
    )
    # The oldest: intermediate layers of builds on top of it carry its labels too.
    return str(min(found, key=lambda i: i.attrs.get("Created", "")).id) if found else None


def _remove_images(client: Any, tags: list[str]) -> list[str]:
    # The low-level listing: the high-level one fetches each image again, and one that
    # another process removes in between fails the whole listing.
    listing = client.api.images(filters={"label": LABEL})
    ids = {t: str(i["Id"]) for i in listing for t in i.get("RepoTags") or () if t in tags}
    done: list[str] = []
    # Sandbox snapshots (the checkout laid over an image) are its children: they go first.
    for image in listing:
        kind = str((image.get("Labels") or {}).get(LABEL_IMAGE, ""))
        if image.get("ParentId") in ids.values() and kind.startswith("snapshot-"):
            done.append(_remove_one(client, str(image["Id"]), f"snapshot {image['Id'][:19]}"))
    for tag in tags:
        if tag in ids:
            done.append(_remove_one(client, tag, tag))
    return done


def _remove_one(client: Any, ref: str, name: str) -> str:
    try:
        client.images.remove(ref, force=True)
    except Exception as exc:  # in use by a running sandbox, or a child image left
        return f"{name} (kept: {str(exc)[:120]})"
    return name


def _has_image(client: Any, tag: str, key: str) -> bool:
    try:
        image = client.images.get(tag)
    except Exception:
        return False
    return bool((image.labels or {}).get(LABEL_ENV_KEY) == key)


def _docker_build(
    client: Any,
    tag: str,
    dockerfile: str,
    files: dict[str, bytes],
    dirs: dict[str, Path],
    log_path: Path,
    nocache: bool = False,
) -> None:
    """`docker build` with the network on; the log streams into `log_path`.

    A build whose step container is killed from outside (exit 137 while another process
    removes it, e.g. a `harness sandbox prune` that takes it for a leftover: it inherits the
    base image's labels) is retried from the layer cache, twice at most; so is one whose
    cached parent layer was deleted under it (another (repo, version) of the same repository
    shares the first layers, and pruning that one's images removes them mid-build).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as ctx, open(log_path, "w") as out:
        with tarfile.open(fileobj=ctx, mode="w") as tar:
            for name, data in {"Dockerfile": dockerfile.encode(), **files}.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            for name, folder in dirs.items():
                tar.add(str(folder), arcname=name)
        out.write(dockerfile + "\n")
        for attempt in range(3):
            ctx.seek(0)
            error, killed = _stream_build(client, ctx, tag, out, nocache and attempt == 0)
            if not (error and killed):
                break
            out.write(f"# the build lost its container or a cached layer; retry {attempt + 1}\n")
    if error:
        raise EnvBuildFailed(
            f"building {tag} failed: {error.splitlines()[-1][:300]} (log: {log_path})",
            log_path=str(log_path),
            hint=f"read {log_path}; a spec for a Python Debian lacks may need other pins",
        )


# A cached layer the build was about to use was removed meanwhile (docker's own words).
LAYER_GONE = re.compile(r"unknown parent image ID|failed to set parent")


def _stream_build(client: Any, ctx: Any, tag: str, out: Any, nocache: bool) -> tuple[str, bool]:
    """One `docker build`: (error or "", whether to retry it: a step container was killed
    from outside, or a cached layer removed under it)."""
    error = ""
    killed = False
    try:
        for chunk in client.api.build(
            fileobj=ctx,
            custom_context=True,
            tag=tag,
            rm=True,
            forcerm=True,
            decode=True,
            nocache=nocache,
        ):
            if "stream" in chunk:
                text = ANSI.sub("", chunk["stream"])
                killed = killed or "is already in progress" in text
                out.write(text)
            elif "error" in chunk:
                error = str(chunk["error"]).strip()
                out.write(f"ERROR: {error}\n")
            out.flush()
    except Exception as exc:  # the engine went away, a context too large, ...
        error = str(exc)
        out.write(f"ERROR: {error}\n")
    return error, (killed and "non-zero code: 137" in error) or bool(LAYER_GONE.search(error))
