"""Running reproduction scripts: on the original code (cached) and in a given sandbox.

Exit-code convention (CodeMonkeys): 0 = issue fixed, 2 = issue still present, anything else
= the script crashed. Output shown to models is middle-truncated.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.sandboxes import Sandbox
from harness.text import middle_truncate
from harness.types import TestScript

FIXED, BROKEN = 0, 2


@dataclass(frozen=True)
class TestRun:
    exit_code: int
    output: str  # middle-truncated stdout + stderr
    timed_out: bool = False
    duration_s: float = 0.0

    @property
    def meaning(self) -> str:
        if self.timed_out:
            return "the script timed out"
        if self.exit_code == FIXED:
            return "0 means the issue is fixed"
        if self.exit_code == BROKEN:
            return "2 means the issue is present"
        return "the script crashed"

    @property
    def reproduces(self) -> bool:
        return self.exit_code == BROKEN and not self.timed_out

    @property
    def passes(self) -> bool:
        return self.exit_code == FIXED and not self.timed_out

    def to_json(self) -> dict[str, object]:
        return {
            "exit_code": self.exit_code,
            "output": self.output,
            "timed_out": self.timed_out,
            "duration_s": round(self.duration_s, 3),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TestRun:
        return cls(
            int(data["exit_code"]),
            str(data["output"]),
            bool(data.get("timed_out")),
            float(data.get("duration_s") or 0.0),
        )


def test_key(test: TestScript) -> str:
    return hashlib.sha256(test.content.encode()).hexdigest()[:16]


class ReproRunner:
    """Runs scripts in sandboxes, bounded by a shared limit on concurrent runs. Use as
    `async with`: leaving it cancels (and awaits) the runs on the original code in flight."""

    def __init__(
        self,
        pristine: Sandbox,
        *,
        timeout: float,
        output_limit: int,
        limit: asyncio.Semaphore,
        python_path: bool = True,
    ) -> None:
        self.pristine = pristine
        self.timeout = timeout
        self.output_limit = output_limit
        self.limit = limit
        self.python_path = python_path
        self._original: dict[str, asyncio.Future[TestRun]] = {}

    def with_timeout(self, timeout: float) -> ReproRunner:
        """This runner with another default timeout per run (each stage has its own); the
        sandbox, the limit and the cache of runs on the original code are shared."""
        other = copy.copy(self)
        other.timeout = timeout
        return other

    async def __aenter__(self) -> ReproRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        pending = [f for f in self._original.values() if not f.done()]
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def on_original(self, test: TestScript, timeout: float | None = None) -> TestRun:
        """The script's result on the unmodified repository (each distinct script runs once,
        with the timeout of whoever asks first)."""
        key = test_key(test)
        if key not in self._original:
            self._original[key] = asyncio.ensure_future(self._fresh(test, timeout))
        return await asyncio.shield(self._original[key])

    def remember_original(self, test: TestScript, run: TestRun) -> None:
        """Seed the cache (a resumed run already knows these results)."""
        future: asyncio.Future[TestRun] = asyncio.get_running_loop().create_future()
        future.set_result(run)
        self._original.setdefault(test_key(test), future)

    async def on_patch(
        self, patch: str, tests: list[TestScript], timeout: float | None = None
    ) -> list[TestRun] | None:
        """Every script's result on the original code plus `patch`; None if it won't apply."""
        async with self.limit:
            box = await self._fork_with(patch)
            if box is None:
                return None
            async with box:
                return [await self.run_in(box, t, timeout, limited=False) for t in tests]

    async def patched(self, patch: str) -> Sandbox | None:
        """A fresh sandbox with `patch` applied (the caller closes it); None if it won't apply."""
        async with self.limit:
            return await self._fork_with(patch)

    async def _fork_with(self, patch: str) -> Sandbox | None:
        """A fork of the pristine sandbox with `patch` applied, or None. The fork is closed
        whenever it is not handed back: when the patch does not apply, and when applying it
        raises (a broken sandbox) or is cancelled."""
        box = await self.pristine.fork()
        try:
            applied = await box.apply_patch(patch)
        except BaseException:
            await box.close()
            raise
        if not applied.applied:
            await box.close()
            return None
        return box

    async def _fresh(self, test: TestScript, timeout: float | None) -> TestRun:
        async with self.limit:
            box = await self.pristine.fork()
            async with box:
                return await self.run_in(box, test, timeout, limited=False)

    async def run_in(
        self, box: Sandbox, test: TestScript, timeout: float | None = None, *, limited: bool = True
    ) -> TestRun:
        """Write `test` into `box`'s scratch directory and run it from the work tree."""
        if limited:
            async with self.limit:
                return await self.run_in(box, test, timeout, limited=False)
        path = f"{box.scratch}/{test.path}"
        await box.write_file(path, test.content)
        env = (
            f"PYTHONPATH={shlex.quote(box.workdir)}${{PYTHONPATH:+:$PYTHONPATH}} "
            if (self.python_path)
            else ""
        )
        res = await box.exec(f"{env}python3 {shlex.quote(path)}", timeout=timeout or self.timeout)
        return TestRun(
            res.exit_code,
            middle_truncate(res.output, self.output_limit),
            res.timed_out,
            res.duration_s,
        )
