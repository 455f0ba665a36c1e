"""Base images: recipe keys, the debootstrap path with a CA bundle, reuse, clear failures."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import docker
import pytest

from harness.errors import ImageError
from harness.sandboxes.images import BaseImageRecipe, build_base
from tests.sandboxes.conftest import skip_unless_available

pytestmark = pytest.mark.docker

FAKE_CA = "-----BEGIN CERTIFICATE-----\nTUlJQmhhcm5lc3MtdGVzdC1jYQ==\n-----END CERTIFICATE-----\n"


def test_key_tracks_recipe_and_ca_content(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text(FAKE_CA)
    a = BaseImageRecipe(ca_bundle=ca)
    key_a = a.key()
    assert key_a == BaseImageRecipe(ca_bundle=ca).key()
    assert key_a != BaseImageRecipe().key()
    assert BaseImageRecipe(suite="trixie").key() != BaseImageRecipe().key()
    ca.write_text(FAKE_CA + FAKE_CA)
    assert a.key() != key_a  # the bundle's content, not its path, counts


def test_unreachable_mirror_fails_clearly(tmp_path: Path) -> None:
    skip_unless_available("docker")
    client = docker.from_env()
    recipe = BaseImageRecipe(
        tag="harness-broken:test",
        registry_image="harness-none/none:0",
        mirror="http://127.0.0.1:9/debian",
        pull_timeout_s=20,
    )
    with pytest.raises(ImageError) as info:
        asyncio.run(build_base(client, recipe))
    assert "debootstrap failed" in info.value.message
    assert info.value.hint and "127.0.0.1:9" in info.value.hint
    client.close()


async def _open_snapshot(image: str, tmp_path: Path) -> None:
    from harness.sandboxes import SandboxSpec
    from harness.sandboxes.docker import DockerBackend
    from tests.conftest import make_repo

    make_repo(tmp_path / "repo", {"x.py": "X = 1\n"})
    async with DockerBackend(tmp_path / "cache") as backend:
        box = await backend.open(SandboxSpec(repo=tmp_path / "repo", image=image))
        await box.close()


def test_debootstrap_build_with_ca_bundle_is_cached(tmp_path: Path) -> None:
    skip_unless_available("docker")
    ca = tmp_path / "ca.crt"
    ca.write_text(FAKE_CA)
    recipe = BaseImageRecipe(
        tag="harness-base-test:ca",
        ca_bundle=ca,
        registry_image="harness-none/none:0",
        packages=("python3", "ca-certificates"),
    )
    client = docker.from_env()
    lines: list[str] = []
    first = asyncio.run(build_base(client, recipe, log=lines.append))
    start = time.monotonic()
    second = asyncio.run(build_base(client, recipe, log=lines.append))
    assert first == second and any("reusing" in line for line in lines)
    assert time.monotonic() - start < 30  # a cache hit, not a second debootstrap
    out = client.containers.run(
        first,
        ["bash", "-c", "tail -n 3 /etc/ssl/certs/ca-certificates.crt; id sandbox; ls -ld /testbed"],
        remove=True,
    ).decode()
    client.close()
    assert "TUlJQmhhcm5lc3MtdGVzdC1jYQ==" in out
    assert "uid=1000(sandbox)" in out and "sandbox sandbox" in out
