"""Host side of the in-sandbox agent's wire protocol (see agent_script/harness_agent.py).

Every backend starts that agent inside its isolation and talks to it over a unix socket, so
exec, file access, timeouts and output caps behave the same in docker, bwrap and local.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from harness.errors import SandboxError
from harness.types import ExecResult

OutputCallback = Callable[[str, bytes], None]  # ("stdout" | "stderr", chunk)
HOST_GRACE_S = 10.0  # extra wait beyond the agent's own timeout before the host gives up


def agent_script_path() -> Path:
    """The agent script shipped as package data (bind-mounted read-only into sandboxes)."""
    ref = resources.files("harness.sandboxes") / "agent_script" / "harness_agent.py"
    return Path(str(ref))


class AgentChannel:
    """Talks to one agent. Each request is one connection, so requests run concurrently."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._lease: asyncio.StreamWriter | None = None

    async def wait_ready(self, timeout: float, alive: Callable[[], bool] | None = None) -> None:
        """Wait for the socket, then take the lease that keeps the agent alive."""
        deadline = time.monotonic() + timeout
        while True:
            if self.socket_path.exists():
                try:
                    reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
                    break
                except OSError:
                    pass
            if alive is not None and not alive():
                raise SandboxError("the sandbox agent exited before it was ready")
            if time.monotonic() > deadline:
                raise SandboxError(f"the sandbox agent did not start within {timeout:.0f} s")
            await asyncio.sleep(0.01)
        await _send(writer, {"op": "lease"})
        await _read_result(reader)
        self._lease = writer

    async def close(self) -> None:
        """Drop the lease: the agent kills its commands and exits."""
        if self._lease is not None:
            self._lease.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._lease.wait_closed()
            self._lease = None

    async def request(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        reader, writer = await self._connect()
        try:
            await _send(writer, payload)
            return await _read_result(reader)
        finally:
            writer.close()

    async def exec(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        cap: int = 1 << 20,
        on_output: OutputCallback | None = None,
    ) -> ExecResult:
        payload: dict[str, Any] = {
            "op": "exec",
            "argv": list(argv),
            "timeout": timeout,
            "cwd": cwd,
            "env": dict(env or {}),
            "cap": cap,
            "stream": on_output is not None,
        }
        if stdin is not None:
            payload["stdin"] = base64.b64encode(stdin).decode("ascii")
        start = time.monotonic()
        reader, writer = await self._connect()
        try:
            await _send(writer, payload)
            host_timeout = None if timeout is None else timeout + HOST_GRACE_S
            try:
                result = await asyncio.wait_for(_read_frames(reader, on_output), host_timeout)
            except TimeoutError:
                # The agent itself is stuck; closing the connection makes it kill the tree.
                return ExecResult(
                    -1,
                    "",
                    "harness: the sandbox stopped answering\n",
                    time.monotonic() - start,
                    timed_out=True,
                )
        finally:
            writer.close()  # on cancellation too: the agent then kills the command
        return ExecResult(
            exit_code=int(result["exit_code"]),
            stdout=str(result["stdout"]),
            stderr=str(result["stderr"]),
            duration_s=float(result["duration_s"]),
            timed_out=bool(result["timed_out"]),
            truncated=bool(result["truncated"]),
        )

    async def read(self, path: str, limit: int = 64 << 20) -> bytes:
        result = await self.request({"op": "read", "path": path, "limit": limit})
        if not result.get("ok"):
            raise SandboxError(f"cannot read {path}: {result.get('error')}")
        return base64.b64decode(result["data"])

    async def write(self, path: str, data: bytes, mode: int | None = None) -> None:
        payload = {
            "op": "write",
            "path": path,
            "data": base64.b64encode(data).decode("ascii"),
            "mode": mode,
        }
        result = await self.request(payload)
        if not result.get("ok"):
            raise SandboxError(f"cannot write {path}: {result.get('error')}")

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_unix_connection(str(self.socket_path), limit=1 << 22)
        except OSError as exc:
            raise SandboxError(f"the sandbox is gone ({exc})") from exc


async def _send(writer: asyncio.StreamWriter, payload: Mapping[str, Any]) -> None:
    data = json.dumps(payload).encode()
    writer.write(struct.pack(">I", len(data)) + data)
    await writer.drain()


async def _read_frames(
    reader: asyncio.StreamReader, on_output: OutputCallback | None
) -> dict[str, Any]:
    while True:
        try:
            header = await reader.readexactly(5)
            body = await reader.readexactly(struct.unpack(">I", header[1:])[0])
        except asyncio.IncompleteReadError as exc:
            raise SandboxError("the sandbox closed the connection mid-command") from exc
        kind = header[:1]
        if kind == b"r":
            result: dict[str, Any] = json.loads(body)
            return result
        if on_output is not None:
            on_output("stdout" if kind == b"o" else "stderr", body)


async def _read_result(reader: asyncio.StreamReader) -> dict[str, Any]:
    return await _read_frames(reader, None)
