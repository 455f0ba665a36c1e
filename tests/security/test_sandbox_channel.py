"""Attacks on the host <-> agent channel: sandboxed code replacing the agent's socket, a
forged result, a forged frame far over the output cap (issue 12, item 2)."""

from __future__ import annotations

import asyncio
import json
import os
import struct
from pathlib import Path

import pytest

from harness.errors import SandboxError
from harness.sandboxes import SandboxBackend, SandboxSpec
from harness.sandboxes.channel import AgentChannel
from tests.conftest import make_repo

FORGED = {
    "exit_code": 0,
    "stdout": "============================== 10 passed in 0.42s ==============================\n",
    "stderr": "",
    "duration_s": 0.42,
    "timed_out": False,
    "truncated": False,
}

# Run detached inside the sandbox: listen on a socket of its own, rename it over the
# agent's, answer every request with a forged "10 passed". It reports how far it got.
EVIL = """
import json, os, socket, struct, sys
status = sys.argv[1]
forged = FORGED_JSON.encode()
srv = socket.socket(socket.AF_UNIX)
mine = "/.harness/run/evil-%d.sock" % os.getpid()  # same file system: rename works
try:
    srv.bind(mine)
except OSError as exc:
    open(status, "w").write("denied: %s" % exc)
    sys.exit(0)
srv.listen(8)
try:
    os.rename(mine, "/.harness/run/agent.sock")
except OSError as exc:
    open(status, "w").write("denied: %s" % exc)
    sys.exit(0)
open(status, "w").write("replaced")
while True:
    conn, _ = srv.accept()
    conn.recv(65536)
    conn.sendall(b"r" + struct.pack(">I", len(forged)) + forged)
    conn.close()
""".replace("FORGED_JSON", repr(json.dumps(FORGED)))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    make_repo(tmp_path / "repo", {"test_app.py": "def test_it():\n    assert False\n"})
    return tmp_path / "repo"


async def test_sandboxed_code_cannot_replace_the_agent(backend: SandboxBackend, repo: Path) -> None:
    async with await backend.open(SandboxSpec(repo=repo)) as box:
        await box.write_file("/tmp/evil.py", EVIL)
        await box.exec(
            "setsid nohup python3 /tmp/evil.py /tmp/evil.status >/dev/null 2>&1 </dev/null & "
            "for i in $(seq 100); do [ -s /tmp/evil.status ] && break; sleep 0.05; done"
        )
        # The grading run that follows must see the real outcome (one failing test).
        try:
            res = await box.exec("echo real-run; exit 1")
        except SandboxError as exc:  # refusing is fine; believing the forgery is not
            assert "another process" in str(exc)
        else:
            assert (res.exit_code, res.stdout) == (1, "real-run\n")
        status = (await box.exec("cat /tmp/evil.status")).stdout
        assert status.startswith("denied"), status


async def _serve_forger(
    path: Path, reply: bytes, sent: list[int], flood: bool = False
) -> asyncio.AbstractServer:
    """A process on the agent's socket path that answers the lease, then sends `reply`
    (and with `flood`, as many megabytes as its header promises)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = struct.unpack(">I", await reader.readexactly(4))[0]
        request = json.loads(await reader.readexactly(size))
        try:
            if request["op"] == "lease":
                ok = json.dumps({"ok": True, "pid": os.getpid()}).encode()
                writer.write(b"r" + struct.pack(">I", len(ok)) + ok)
                await writer.drain()
                await reader.read()
                return
            writer.write(reply)
            await writer.drain()
            if flood:  # a header that promises more than was sent: send the rest
                chunk = b"x" * (1 << 20)
                for _ in range(struct.unpack(">I", reply[1:5])[0] >> 20):
                    writer.write(chunk)
                    await writer.drain()
                    sent[0] += len(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_unix_server(handle, str(path))


async def test_a_replaced_socket_is_refused(
    backend: SandboxBackend, repo: Path, tmp_path: Path
) -> None:
    """Even if sandboxed code got past the directory's permissions, the host would not
    believe another process on the socket: it must be the agent that took the lease."""
    async with await backend.open(SandboxSpec(repo=repo)) as box:
        sock = box.root / "run" / "agent.sock"  # type: ignore[attr-defined]
        forged = json.dumps(FORGED).encode()
        server = await _serve_forger(
            sock.with_name("forger.sock"), b"r" + struct.pack(">I", len(forged)) + forged, [0]
        )
        try:
            os.rename(sock.with_name("forger.sock"), sock)
            with pytest.raises(SandboxError, match="another process"):
                await box.exec("echo real-run; exit 1")
        finally:
            server.close()


@pytest.mark.parametrize("kind", [b"r", b"o"])
async def test_an_oversized_frame_is_refused_unread(tmp_path: Path, kind: bytes) -> None:
    """An agent that claims a 256 MB frame (the output cap is 64 KiB) is refused at its
    header: the host reads none of it, so the cap holds and its memory stays flat."""
    sent = [0]
    path = tmp_path / "agent.sock"
    server = await _serve_forger(path, kind + struct.pack(">I", 256 << 20), sent, flood=True)
    channel = AgentChannel(path)
    try:
        await channel.wait_ready(10.0)
        with pytest.raises(SandboxError, match="frame"):
            await channel.exec(["true"], timeout=30.0, cap=64 << 10, on_output=lambda *_: None)
        await asyncio.sleep(0.5)  # let the forger push what the socket still takes
        assert sent[0] < 32 << 20, f"the host took in {sent[0] >> 20} MB of a forged frame"
    finally:
        await channel.close()
        server.close()


async def test_commands_cannot_kill_the_agent(backend: SandboxBackend, repo: Path) -> None:
    async with await backend.open(SandboxSpec(repo=repo)) as box:
        res = await box.exec("pkill -9 -f '[/].harness/agent.py'; sleep 0.5; echo tried")
        assert res.stdout == "tried\n"
        # Its helper (the sandbox user's own) may die; the agent answers and starts another.
        res = await box.exec("sleep 31.7 & sleep 31.7 & wait", timeout=1.0)
        assert res.timed_out
        # -f: a killed process not yet reaped (a zombie) has no command line left to match.
        left = await box.exec("pgrep -f '[s]leep 31.7' || true")
        assert left.stdout.strip() == ""
