"""Host side of the in-sandbox agent's wire protocol (see agent_script/harness_agent.py).

Every backend starts that agent inside its isolation and talks to it over a unix socket, so
exec, file access, timeouts and output caps behave the same in docker, bwrap and local. The
socket is never trusted on its own: the lease connection (made before any sandboxed code runs)
pins the agent's process and uid, every later connection must reach that same process, and
every frame is bounded by what the request can legitimately produce.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
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
CHUNK_MAX = 1 << 16  # the agent's output frames carry at most one 64 KiB read
SMALL_RESULT = 1 << 16  # results of lease, write, setup, pack, unpack
READ_LIMIT = 64 << 20
# json.dumps escapes any character in at most 6 bytes; each captured byte becomes <= 1 char.
JSON_BLOWUP = 6


def agent_script_path() -> Path:
    """The agent script shipped as package data (bind-mounted read-only into sandboxes)."""
    ref = resources.files("harness.sandboxes") / "agent_script" / "harness_agent.py"
    return Path(str(ref))


class AgentChannel:
    """Talks to one agent. Each request is one connection, so requests run concurrently."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._lease: asyncio.StreamWriter | None = None
        self.peer: tuple[int, int] | None = None  # (pid, uid) of the agent, from the lease

    async def wait_ready(self, timeout: float, alive: Callable[[], bool] | None = None) -> None:
        """Wait for the socket, then take the lease that keeps the agent alive.

        Called before any sandboxed code runs, so the process that answers is the agent:
        its pid and uid are pinned here and checked on every later connection.
        """
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
        try:
            await _send(writer, {"op": "lease"})
            result = await _read_result(reader, SMALL_RESULT)
        except BaseException:
            writer.close()
            raise
        if not result.get("ok"):
            writer.close()
            raise SandboxError(f"the sandbox agent refused the lease: {result.get('error')}")
        self.peer = _peer_of(writer)
        self._lease = writer

    async def close(self) -> None:
        """Drop the lease: the agent kills its commands and exits."""
        if self._lease is not None:
            self._lease.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._lease.wait_closed()
            self._lease = None

    async def request(
        self, payload: Mapping[str, Any], limit: int = SMALL_RESULT
    ) -> dict[str, Any]:
        reader, writer = await self._connect()
        try:
            await _send(writer, payload)
            return await _read_result(reader, limit)
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
        # Two capped streams, each with its truncation note, escaped, plus the JSON around them.
        limit = 2 * JSON_BLOWUP * (cap + 256) + 4096
        start = time.monotonic()
        reader, writer = await self._connect()
        try:
            await _send(writer, payload)
            host_timeout = None if timeout is None else timeout + HOST_GRACE_S
            try:
                result = await asyncio.wait_for(
                    _read_frames(reader, on_output, limit), host_timeout
                )
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
        try:
            return ExecResult(
                exit_code=int(result["exit_code"]),
                stdout=str(result["stdout"]),
                stderr=str(result["stderr"]),
                duration_s=float(result["duration_s"]),
                timed_out=bool(result["timed_out"]),
                truncated=bool(result["truncated"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SandboxError(f"the sandbox agent sent a malformed result ({exc})") from exc

    async def read(self, path: str, limit: int = READ_LIMIT) -> bytes:
        bound = (limit + 2) // 3 * 4 + SMALL_RESULT
        result = await self.request({"op": "read", "path": path, "limit": limit}, bound)
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

    async def setup(self, *, src: str | None, scratch: str, own_workdir: bool) -> None:
        """Fill the work tree from `src` (a path inside the sandbox) as the sandbox user."""
        payload = {"op": "setup", "src": src, "scratch": scratch, "own_workdir": own_workdir}
        result = await self.request(payload)
        if not result.get("ok"):
            raise SandboxError(f"preparing the sandbox's work tree failed: {result.get('error')}")

    async def copy_tree_to(self, dest: AgentChannel) -> None:
        """Copy this sandbox's work tree into `dest`'s: tar inside one, untar inside the other.

        Both ends run as their sandbox user inside their isolation, so symlinks in the tree
        resolve in a sandbox, never on the host.
        """
        src_reader, src_writer = await self._connect()
        dst_reader, dst_writer = await dest._connect()
        try:
            await _send(src_writer, {"op": "pack"})
            await _send(dst_writer, {"op": "unpack"})
            while True:
                kind, body = await _read_frame(src_reader, SMALL_RESULT)
                if kind == b"r":
                    packed: dict[str, Any] = json.loads(body)
                    break
                if kind != b"o":
                    raise SandboxError("the sandbox agent sent a malformed frame")
                dst_writer.write(struct.pack(">I", len(body)) + body)
                await dst_writer.drain()
            dst_writer.write(struct.pack(">I", 0))
            await dst_writer.drain()
            unpacked = await _read_result(dst_reader, SMALL_RESULT)
        except (OSError, ConnectionError) as exc:
            raise SandboxError(f"copying the work tree between sandboxes failed ({exc})") from exc
        finally:
            src_writer.close()
            dst_writer.close()
        for side, res in (("packing", packed), ("unpacking", unpacked)):
            if res.get("exit_code") != 0:
                raise SandboxError(f"{side} the work tree failed: {res.get('stderr', '').strip()}")

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            reader, writer = await asyncio.open_unix_connection(
                str(self.socket_path), limit=1 << 22
            )
        except OSError as exc:
            raise SandboxError(f"the sandbox is gone ({exc})") from exc
        peer = _peer_of(writer)
        if self.peer is not None and peer != self.peer:
            writer.close()
            raise SandboxError(
                f"the sandbox's agent socket is answered by another process (pid {peer[0]}, "
                f"uid {peer[1]}; the agent is pid {self.peer[0]}, uid {self.peer[1]}): "
                "sandboxed code replaced it, so nothing more from this sandbox is trusted"
            )
        return reader, writer


def _peer_of(writer: asyncio.StreamWriter) -> tuple[int, int]:
    """(pid, uid) of the process that listens on the other end (SO_PEERCRED)."""
    sock: socket.socket = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


async def _send(writer: asyncio.StreamWriter, payload: Mapping[str, Any]) -> None:
    data = json.dumps(payload).encode()
    writer.write(struct.pack(">I", len(data)) + data)
    await writer.drain()


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, bytes]:
    """One frame; a frame larger than its kind allows is refused before it is read."""
    try:
        header = await reader.readexactly(5)
        kind, size = header[:1], struct.unpack(">I", header[1:])[0]
        bound = limit if kind == b"r" else CHUNK_MAX
        if kind not in (b"r", b"o", b"e"):
            raise SandboxError(f"the sandbox agent sent a frame of unknown kind {kind!r}")
        if size > bound:
            raise SandboxError(
                f"the sandbox agent sent a {size}-byte frame where at most {bound} can come: "
                "refused (the channel is not trusted any more)"
            )
        return kind, await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise SandboxError("the sandbox closed the connection mid-command") from exc


async def _read_frames(
    reader: asyncio.StreamReader, on_output: OutputCallback | None, limit: int
) -> dict[str, Any]:
    while True:
        kind, body = await _read_frame(reader, limit)
        if kind == b"r":
            try:
                result: dict[str, Any] = json.loads(body)
            except ValueError as exc:
                raise SandboxError("the sandbox agent sent a malformed result") from exc
            if not isinstance(result, dict):
                raise SandboxError("the sandbox agent sent a malformed result")
            return result
        if on_output is not None:
            on_output("stdout" if kind == b"o" else "stderr", body)


async def _read_result(reader: asyncio.StreamReader, limit: int) -> dict[str, Any]:
    return await _read_frames(reader, None, limit)
