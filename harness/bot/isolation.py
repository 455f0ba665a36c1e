"""The solver runs in a child process that never holds the GitHub token.

The bot process keeps the token and talks to GitHub (and pushes); it starts
`harness bot solve-worker` with an environment that lacks every GitHub credential, sends it
the task as JSON on stdin, and reads the SolveResult back from a file. Removing the token from
our own `os.environ` would not do: the kernel keeps the initial environment in
/proc/<pid>/environ for the life of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.bot.events import SolveOptions
from harness.errors import ConfigError, HarnessError
from harness.types import Candidate, CandidateResult, SolveResult, Task, TestScript

# Credentials of the workflow run: the job token, and the runner's tokens for artifacts,
# caches and OIDC, which act for the repository too.
CREDENTIAL_VARS = (
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "GH_ENTERPRISE_TOKEN",
    "ACTIONS_RUNTIME_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
)
RESULT_FILE = "bot-result.json"
WORKER = ("-m", "harness", "bot", "solve-worker")
STOP_GRACE_S = 30.0


def solver_env(environ: Mapping[str, str], secrets: Iterable[str]) -> dict[str, str]:
    """`environ` without GitHub credentials: the known names, and any variable whose value
    holds one of `secrets` (a workflow may pass the token on under another name)."""
    values = [s for s in secrets if s]
    return {
        k: v
        for k, v in environ.items()
        if k not in CREDENTIAL_VARS and not any(s in v for s in values)
    }


@dataclass(frozen=True)
class WorkerSpec:
    """How the child builds its solver: a `module:function` factory, else the pipeline of
    `harness solve` from a config file, on a sandbox backend."""

    solver: str | None = None
    config_file: Path | None = None
    backend: str | None = None


class IsolatedSolver:
    """A `Solver` whose work happens in `harness bot solve-worker`, started with `env`."""

    def __init__(
        self,
        spec: WorkerSpec,
        options: SolveOptions,
        *,
        env: Mapping[str, str],
        log: Callable[[str], None],
        python: str = sys.executable,
    ) -> None:
        self.spec = spec
        self.options = options
        self._env = dict(env)
        self._log = log
        self._python = python

    async def aclose(self) -> None:
        return None  # each solve's process ends with it: nothing is held between tasks

    async def solve(self, task: Task, run_dir: Path) -> SolveResult:
        run_dir.mkdir(parents=True, exist_ok=True)
        result_path = run_dir / RESULT_FILE
        result_path.unlink(missing_ok=True)
        request = json.dumps(
            {
                "spec": {
                    "solver": self.spec.solver,
                    "config_file": str(self.spec.config_file) if self.spec.config_file else None,
                    "backend": self.spec.backend,
                },
                "options": asdict(self.options),
                "task": task.to_json(),
                "run_dir": str(run_dir),
            }
        ).encode()
        proc = await asyncio.create_subprocess_exec(
            self._python,
            *WORKER,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._env,
            preexec_fn=_die_with_parent(),
        )
        try:
            await _feed(proc, request)
            assert proc.stdout is not None
            async for line in proc.stdout:
                self._log(line.decode(errors="replace").rstrip())
            code = await proc.wait()
        except BaseException:
            await _stop(proc)
            raise
        return read_result(result_path, code)


def read_result(path: Path, code: int) -> SolveResult:
    """The worker's answer: its SolveResult, or its error raised here."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise HarnessError(
            f"the solver process exited with status {code} and no result",
            hint="its output is in the log above",
        ) from None
    if "error" in data:
        error = data["error"]
        kind = ConfigError if error.get("config") else HarnessError
        raise kind(str(error.get("message") or "the solver failed"), hint=error.get("hint"))
    return result_from_json(data["result"])


def parse_request(data: Mapping[str, Any]) -> tuple[WorkerSpec, SolveOptions, Task, Path]:
    spec = data["spec"]
    config_file = spec.get("config_file")
    return (
        WorkerSpec(spec.get("solver"), Path(config_file) if config_file else None, spec["backend"]),
        SolveOptions(**data["options"]),
        Task.from_json(data["task"]),
        Path(data["run_dir"]),
    )


def error_json(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, HarnessError):
        return {
            "error": {
                "message": exc.message,
                "hint": exc.hint,
                "config": isinstance(exc, ConfigError),
            }
        }
    return {"error": {"message": f"{type(exc).__name__}: {exc}", "hint": None, "config": False}}


def result_json(result: SolveResult) -> dict[str, Any]:
    data = asdict(result)
    data["run_dir"] = str(result.run_dir)
    return {"result": data}


def result_from_json(data: Mapping[str, Any]) -> SolveResult:
    def test(raw: Mapping[str, Any] | None) -> TestScript | None:
        return TestScript(**raw) if raw is not None else None

    candidates = tuple(
        CandidateResult(
            Candidate(**{**c["candidate"], "test": test(c["candidate"].get("test"))}),
            votes=int(c["votes"]),
            selected=bool(c["selected"]),
        )
        for c in data.get("candidates") or ()
    )
    return SolveResult(
        **{
            **data,
            "run_dir": Path(data["run_dir"]),
            "test": test(data.get("test")),
            "candidates": candidates,
            "unpriced": tuple(data.get("unpriced") or ()),
        }
    )


async def _feed(proc: asyncio.subprocess.Process, request: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(request)
        await proc.stdin.drain()
    proc.stdin.close()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (the worker then closes its sandboxes), SIGKILL if it does not end."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def _prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not Linux
        return None


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec hook: the child gets SIGTERM when the bot process dies (PR_SET_PDEATHSIG).
    libc is looked up here, before the fork: the child may only make the call."""
    prctl = _prctl()
    if prctl is None:
        return None

    def hook() -> None:
        prctl(1, signal.SIGTERM, 0, 0, 0)

    return hook


def make_undumpable() -> None:
    """Keep same-uid processes (the solver and what it runs) from reading this process's
    memory or /proc/<pid>/environ, or tracing it (PR_SET_DUMPABLE 0). Root still can."""
    prctl = _prctl()
    if prctl is not None:
        prctl(4, 0, 0, 0, 0)
