"""Build the base image sandboxes run in: python3, venv, pip, pytest, git, patch, a `sandbox` user.

From a registry image when one can be pulled, otherwise from Debian packages with
debootstrap + `docker import` (machines with no registry). Builds are keyed by their recipe
(and the CA bundle's content) and reused; `rebuild=True` forces a new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ImageError
from harness.sandboxes.docker import DEFAULT_IMAGE, LABEL, LABEL_IMAGE
from harness.tempdirs import drop_tempdir, hold_tempdir

RECIPE_VERSION = "1"
LABEL_KEY = "harness.base.key"
CA_IN_IMAGE = "/etc/ssl/certs/ca-certificates.crt"
Log = Callable[[str], None]


@dataclass(frozen=True)
class BaseImageRecipe:
    tag: str = DEFAULT_IMAGE
    suite: str = "bookworm"  # Debian suite: bullseye (py3.9), bookworm (3.11), trixie (3.13)
    mirror: str = "http://deb.debian.org/debian"
    packages: tuple[str, ...] = (
        "python3",
        "python3-venv",
        "python3-pip",
        "python3-pytest",
        "git",
        "patch",
        "ca-certificates",
        "procps",
        "bash",
        "coreutils",
    )
    registry_image: str | None = None  # e.g. "debian:bookworm-slim"; None = f"debian:{suite}-slim"
    ca_bundle: Path | None = None  # appended to the image's trust store (TLS proxies)
    pull_timeout_s: float = 120.0

    def key(self) -> str:
        parts = [
            RECIPE_VERSION,
            self.suite,
            self.mirror,
            ",".join(sorted(self.packages)),
            self.registry_image or "",
        ]
        if self.ca_bundle is not None:
            parts.append(hashlib.sha256(self.ca_bundle.read_bytes()).hexdigest())
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


async def build_base(
    client: Any, recipe: BaseImageRecipe, *, rebuild: bool = False, log: Log = lambda _: None
) -> str:
    """Return the id of an image built from `recipe`, building it only when needed."""
    if recipe.ca_bundle is not None and not recipe.ca_bundle.is_file():
        raise ImageError(f"CA bundle {recipe.ca_bundle} is not a file")
    key = recipe.key()
    if not rebuild:
        # Snapshot and fork images inherit the base's labels: ask for base images only.
        labels = [f"{LABEL_KEY}={key}", f"{LABEL_IMAGE}=base"]
        found = await asyncio.to_thread(client.images.list, filters={"label": labels})
        if found:
            image = found[0]
            await asyncio.to_thread(_tag, image, recipe.tag)
            log(f"reusing {recipe.tag} ({image.short_id}, recipe {key})")
            return str(image.id)
    registry = recipe.registry_image or f"debian:{recipe.suite}-slim"
    pulled = await _try_pull(client, registry, recipe.pull_timeout_s, log)
    if pulled:
        image_id = await asyncio.to_thread(_build_from_registry, client, recipe, registry, key, log)
    else:
        image_id = await _build_with_debootstrap(client, recipe, key, log)
    log(f"built {recipe.tag} ({image_id[:19]})")
    return image_id


async def _try_pull(client: Any, name: str, timeout: float, log: Log) -> bool:
    log(f"trying to pull {name} ...")
    try:
        await asyncio.wait_for(asyncio.to_thread(client.images.pull, name), timeout)
        return True
    except Exception as exc:  # no registry, DNS failure, timeout: fall back to debootstrap
        log(f"pull failed ({str(exc).splitlines()[0][:160]}); building from Debian packages")
        return False


def _tag(image: Any, tag: str) -> None:
    repo, _, version = tag.rpartition(":") if ":" in tag else (tag, "", "latest")
    image.tag(repo, version or "latest")


def _labels(key: str) -> dict[str, str]:
    return {LABEL: "1", LABEL_IMAGE: "base", LABEL_KEY: key}


def _build_from_registry(
    client: Any, recipe: BaseImageRecipe, base: str, key: str, log: Log
) -> str:
    ca_step = ""
    files: dict[str, bytes] = {}
    if recipe.ca_bundle is not None:
        files["harness-ca.crt"] = recipe.ca_bundle.read_bytes()
        ca_step = (
            "COPY harness-ca.crt /tmp/harness-ca.crt\n"
            f"RUN cat /tmp/harness-ca.crt >> {CA_IN_IMAGE}\n"
        )
    dockerfile = (
        f"FROM {base}\n"
        "ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8\n"
        f"RUN apt-get update && apt-get install -y --no-install-recommends "
        f"{' '.join(recipe.packages)} && rm -rf /var/lib/apt/lists/*\n"
        "RUN groupadd -g 1000 sandbox && useradd -m -u 1000 -g 1000 sandbox "
        "&& mkdir -p /testbed && chown 1000:1000 /testbed\n"
        f"{ca_step}"
        f"ENV PIP_CERT={CA_IN_IMAGE} REQUESTS_CA_BUNDLE={CA_IN_IMAGE} SSL_CERT_FILE={CA_IN_IMAGE}\n"
        "WORKDIR /testbed\n"
    )
    files["Dockerfile"] = dockerfile.encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    try:
        image, lines = client.images.build(
            fileobj=context, custom_context=True, tag=recipe.tag, labels=_labels(key), rm=True
        )
    except Exception as exc:
        raise ImageError(f"building {recipe.tag} from {base} failed: {exc}") from exc
    for line in lines:
        if "stream" in line and line["stream"].strip():
            log(line["stream"].rstrip())
    return str(image.id)


async def _build_with_debootstrap(client: Any, recipe: BaseImageRecipe, key: str, log: Log) -> str:
    if shutil.which("debootstrap") is None:
        raise ImageError(
            "no registry image could be pulled and debootstrap is not installed",
            hint="`sudo apt-get install debootstrap` (Debian/Ubuntu), or make a registry "
            "reachable for `docker pull`",
        )
    if os.geteuid() != 0:
        raise ImageError(
            "debootstrap needs root to build the base image",
            hint="run `sudo harness sandbox build-base` once; sandboxes then run as any user",
        )
    tmp = hold_tempdir("harness-base-")
    rootfs = tmp / "rootfs"
    try:
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(recipe.packages)}",
            recipe.suite,
            str(rootfs),
            recipe.mirror,
        ]
        log("$ " + " ".join(cmd))
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        assert proc.stdout is not None
        tail: list[str] = []
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail = [*tail[-30:], line]
            log(line)
        if await proc.wait() != 0:
            raise ImageError(
                "debootstrap failed:\n" + "\n".join(tail),
                hint=f"check that {recipe.mirror} is reachable",
            )
        _finish_rootfs(rootfs, recipe)
        archive = tmp / "rootfs.tar"
        log("packing the root file system ...")
        await asyncio.to_thread(_pack, rootfs, archive)
        log("importing into docker ...")
        return await asyncio.to_thread(_import, client, archive, recipe, key)
    finally:
        await asyncio.to_thread(drop_tempdir, tmp)


def _finish_rootfs(rootfs: Path, recipe: BaseImageRecipe) -> None:
    """Add the sandbox user, an empty /testbed, and the extra CA certificates."""
    with open(rootfs / "etc/passwd", "a") as fh:
        fh.write("sandbox:x:1000:1000::/home/sandbox:/bin/bash\n")
    with open(rootfs / "etc/group", "a") as fh:
        fh.write("sandbox:x:1000:\n")
    for d in ("home/sandbox", "testbed"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
        os.chown(rootfs / d, 1000, 1000)
    if recipe.ca_bundle is not None:
        with open(rootfs / CA_IN_IMAGE.lstrip("/"), "ab") as fh:
            fh.write(b"\n" + recipe.ca_bundle.read_bytes())
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / junk).glob("*"):
            if entry.is_file():
                entry.unlink()


def _pack(rootfs: Path, archive: Path) -> None:
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(os.listdir(rootfs)):
            tar.add(rootfs / entry, arcname=entry)


def _import(client: Any, archive: Path, recipe: BaseImageRecipe, key: str) -> str:
    repo, _, version = recipe.tag.partition(":")
    changes = [
        "ENV LANG=C.UTF-8",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"ENV PIP_CERT={CA_IN_IMAGE}",
        f"ENV REQUESTS_CA_BUNDLE={CA_IN_IMAGE}",
        f"ENV SSL_CERT_FILE={CA_IN_IMAGE}",
        "WORKDIR /testbed",
        'CMD ["/bin/bash"]',
        *[f"LABEL {k}={v}" for k, v in _labels(key).items()],
    ]
    try:
        client.api.import_image_from_file(
            str(archive), repository=repo, tag=version or "latest", changes=changes
        )
        image = client.images.get(recipe.tag)
    except Exception as exc:
        raise ImageError(f"docker import failed: {exc}") from exc
    return str(image.id)
