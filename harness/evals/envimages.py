"""Environment images per (repo, version): built locally from install specs, or official.

Local: a Debian base per suite (harness/sandboxes/images.py; the suite picks the Python),
then an env image on top: the apt packages swebench's base image has, a venv at /opt/venv
with the spec's packages, and the repository at its environment setup commit installed into
/testbed. Its tracked files are then removed, so each instance's checkout (overlaid by the
docker backend) replaces them while build outputs (egg-info, compiled extensions) stay; what
pre_install / install changed in tracked files is kept as a diff that grading re-applies.
Official: the pre-built `swebench/sweb.eval.x86_64.<id>` images, pulled from a registry.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import shlex
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import ImageError
from harness.evals.dataset import Instance
from harness.evals.locks import host_lock
from harness.evals.repos import RepoCache
from harness.evals.requirements import environment_yml_requirements, requirements_txt
from harness.evals.specs import EnvSpec, debian_python, pip_requirements
from harness.sandboxes.checkout import git
from harness.sandboxes.docker import LABEL, LABEL_IMAGE, SANDBOX_USER, connect
from harness.sandboxes.images import LABEL_KEY, BaseImageRecipe, build_base

ENV_RECIPE_VERSION = "1"
LABEL_ENV_KEY = "harness.env.key"
# What swebench's base image installs besides Python and conda (swebench 4.x,
# harness/dockerfiles/python.py, _DOCKERFILE_BASE_PY): compilers for C extensions, locales.
SWEBENCH_APT = (
    "build-essential",
    "libffi-dev",
    "libtiff-dev",
    "locales",
    "locales-all",
    "tzdata",
    "curl",
    "wget",
    "jq",
)
VENV = "/opt/venv"
USER = SANDBOX_USER  # pip and the install step run as the user sandboxes run as
SETUP_DIFF = "/opt/harness/setup.diff"
# What a fresh conda env (swebench's) carries besides Python, at versions of its time;
# specs that need other pins install them afterwards.
BOOTSTRAP = ("'pip<24.1'", "'setuptools<70'", "wheel")
CONDA_ACTIVATE = "source /opt/miniconda3/bin/activate && conda activate testbed"
Log = Callable[[str], None]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class EnvOptions:
    mode: Literal["local", "official"] = "local"
    ca_bundle: Path | None = None  # trusted inside images (TLS proxies); pip needs it to build
    apt_packages: tuple[str, ...] = SWEBENCH_APT
    debian_mirror: str = "http://deb.debian.org/debian"
    official_namespace: str = "swebench"
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


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "x"


def scm_version(describe: str) -> str:
    """What setuptools_scm would call a commit, from `git describe --tags --long`
    ("5.4.0-626-gabc" -> "5.4.1.dev626+gabc"); "" when the tag is not a version."""
    m = re.fullmatch(r"v?(\d+(?:\.\d+)*)-(\d+)-g([0-9a-f]+)", describe.strip())
    if not m:
        return ""
    tag, distance, sha = m.group(1), int(m.group(2)), m.group(3)
    if distance == 0:
        return tag
    parts = tag.split(".")
    parts[-1] = str(int(parts[-1]) + 1)
    return f"{'.'.join(parts)}.dev{distance}+g{sha}"


def render_dockerfile(
    base: str, spec: EnvSpec, opts: EnvOptions, *, key: str, has_reqs: bool, version: str
) -> str:
    """The env image's Dockerfile (pure: tested without Docker)."""
    q = shlex.quote
    lines = [
        f"FROM {base}",
        # First and constant (so layers stay shared between env images): the build's
        # intermediate images must not pass for the base image they start from.
        f"LABEL {LABEL}=1 {LABEL_IMAGE}=env-layer {LABEL_KEY}=''",
        'SHELL ["/bin/bash", "-c"]',
        "USER root",
        "ENV DEBIAN_FRONTEND=noninteractive",
    ]
    if opts.apt_packages:
        lines.append(
            "RUN apt-get update && apt-get install -y --no-install-recommends "
            f"{' '.join(opts.apt_packages)} && rm -rf /var/lib/apt/lists/*"
        )
    # pip runs as the sandbox user, so the venv is its own (grading re-runs the install
    # step as that user) without a chown that would copy every file into a new layer.
    lines += [
        f"RUN cd / && rm -rf /testbed && mkdir -p /testbed /opt/harness && python3 -m venv {VENV}"
        f" && {VENV}/bin/python -m pip install --no-cache-dir {' '.join(BOOTSTRAP)}"
        f" && chown -R {USER} /testbed /opt/harness {VENV}",
        f"ENV PATH={VENV}/bin:$PATH VIRTUAL_ENV={VENV} PIP_DISABLE_PIP_VERSION_CHECK=1"
        " PIP_NO_CACHE_DIR=1",
    ]
    if version:  # repositories versioned by setuptools_scm need it without full history
        lines.append(f"ENV SETUPTOOLS_SCM_PRETEND_VERSION={version}")
    lines.append(f"USER {USER}")
    if has_reqs:
        lines += [
            f"COPY --chown={USER} harness-requirements.txt /opt/harness/requirements.txt",
            "RUN python -m pip install -r /opt/harness/requirements.txt",
        ]
    if spec.pip_packages:
        lines.append(f"RUN python -m pip install {' '.join(q(p) for p in spec.pip_packages)}")
    lines += [f"COPY --chown={USER} testbed/ /testbed/", "WORKDIR /testbed"]
    if spec.pre_install:  # apt-get and friends: as root, like swebench
        lines += ["USER root", *(f"RUN {cmd}" for cmd in spec.pre_install), f"USER {USER}"]
    if spec.install:
        lines.append(f"RUN {spec.install}")
    lines.append("USER root")
    # Root-only steps of the eval commands (Django's locale-gen) happen here once; grading
    # runs them again as the sandbox user, where only the exports take effect.
    lines += [f"RUN ({cmd}) || true" for cmd in spec.eval_commands]
    git = "git -c safe.directory='*'"
    lines += [
        f"RUN {git} diff --binary > {SETUP_DIFF}"
        f" && ({git} ls-files -z | xargs -0 rm -f || true) && rm -rf .git"
        f" && find /testbed /opt/harness {VENV} ! -user 1000 -exec chown -h {USER} {{}} +",
        f"LABEL {LABEL_IMAGE}=env {LABEL_ENV_KEY}={key}",
    ]
    return "\n".join(lines) + "\n"


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
        locks = self.cache_dir / "evals" / "locks"
        async with host_lock(locks, f"base-{suite}"):
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
        checkout = await self.repos.checkout(inst.repo, inst.setup_commit)
        reqs = self._requirements(spec, checkout, notes)
        source = await self.repos.local(inst.repo, [inst.setup_commit])
        describe = await git(
            "describe", "--tags", "--long", inst.setup_commit, cwd=source, check=False
        )
        version = scm_version(describe)
        has_reqs = bool(reqs)
        draft = render_dockerfile(
            base_id, spec, self.options, key="-", has_reqs=has_reqs, version=version
        )
        material = json.dumps([ENV_RECIPE_VERSION, draft, reqs, inst.repo, inst.setup_commit])
        key = hashlib.sha256(material.encode()).hexdigest()[:16]
        tag = f"harness-env:{slug(inst.repo.replace('/', '__'))}-{slug(inst.version)}-{key[:12]}"
        log_path = self.cache_dir / "evals" / "env-logs" / f"{tag.split(':', 1)[1]}.log"
        env = EnvImage(
            tag,
            spec.python,
            used,
            setup_diff=SETUP_DIFF,
            log_path=str(log_path),
            notes=tuple(notes),
        )
        async with host_lock(locks, f"env-{key}"):
            if await asyncio.to_thread(_has_image, client, tag, key):
                return env
            dockerfile = render_dockerfile(
                base_id, spec, self.options, key=key, has_reqs=has_reqs, version=version
            )
            log(f"building {tag} (python {used}, log {log_path}) ...")
            start = time.monotonic()
            await asyncio.to_thread(
                _docker_build, client, tag, dockerfile, checkout, reqs, log_path
            )
        return EnvImage(**{**env.__dict__, "build_s": time.monotonic() - start})

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


def _find_base(client: Any, recipe: BaseImageRecipe) -> str | None:
    """The base image built from `recipe`. Images made from it (snapshots, forks, env
    images) inherit its key label, so the `harness.image=base` label must match too."""
    found = client.images.list(
        all=True, filters={"label": [f"{LABEL_KEY}={recipe.key()}", f"{LABEL_IMAGE}=base"]}
    )
    # The oldest: intermediate layers of builds on top of it carry its labels too.
    return str(min(found, key=lambda i: i.attrs.get("Created", "")).id) if found else None


def _has_image(client: Any, tag: str, key: str) -> bool:
    try:
        image = client.images.get(tag)
    except Exception:
        return False
    return bool((image.labels or {}).get(LABEL_ENV_KEY) == key)


def _docker_build(
    client: Any, tag: str, dockerfile: str, checkout: Path, reqs: str, log_path: Path
) -> None:
    """`docker build` with the network on; the log streams into `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as ctx, open(log_path, "w") as out:
        with tarfile.open(fileobj=ctx, mode="w") as tar:
            for name, data in (
                ("Dockerfile", dockerfile.encode()),
                ("harness-requirements.txt", reqs.encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            tar.add(str(checkout), arcname="testbed")
        ctx.seek(0)
        out.write(dockerfile + "\n")
        error = ""
        try:
            for chunk in client.api.build(
                fileobj=ctx, custom_context=True, tag=tag, rm=True, forcerm=True, decode=True
            ):
                if "stream" in chunk:
                    out.write(ANSI.sub("", chunk["stream"]))
                elif "error" in chunk:
                    error = str(chunk["error"]).strip()
                    out.write(f"ERROR: {error}\n")
                out.flush()
        except Exception as exc:  # the engine went away, a context too large, ...
            error = str(exc)
            out.write(f"ERROR: {error}\n")
    if error:
        raise EnvBuildFailed(
            f"building {tag} failed: {error.splitlines()[-1][:300]} (log: {log_path})",
            log_path=str(log_path),
            hint=f"read {log_path}; a spec for a Python Debian lacks may need other pins",
        )
